"""unshare_fragments: a fragment read in several places of the local query is fetched per place,
where fetching it again is cheap and each place may narrow it differently.

split_by_store fetches identical pieces once. TPC-H Q21 reads ``lineitem WHERE l_commitdate >
l_receiptdate`` as ``l1`` (joined with the suppliers of one nation) and as ``l3`` (in a NOT
EXISTS correlated with ``l1``); fetched once, neither read could be narrowed, since a dynamic
filter may only narrow a fragment whose every row matters through its join. Fetched per read,
``l1`` is narrowed by the suppliers' keys and ``l3`` by ``l1``'s order keys. Only stores that
read tables of keys (in-process DuckDB over files) get this: scanning them again costs little,
and what each read keeps can be narrowed by any number of keys.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

from sqlglot import exp

from gateway.planner.names import fragment_name
from gateway.planner.state import PlanState


def unshare_fragments(state: PlanState) -> PlanState:
    if state.local is None:
        return state
    context = state.context
    by_name = {f.name: f for f in state.fragments}
    reads = Counter(t.name for t in state.local.find_all(exp.Table) if t.name in by_name)
    shared = [
        name
        for name, count in reads.items()
        if count > 1 and context.connectors[by_name[name].store].capabilities.key_tables
    ]
    if not shared:
        return state
    local = state.local.copy()
    fragments = list(state.fragments)
    for name in shared:
        tables = [t for t in local.find_all(exp.Table) if t.name == name]
        for table in tables[1:]:
            clone = replace(by_name[name], name=fragment_name(len(fragments) + 1))
            fragments.append(clone)
            table.set("this", exp.to_identifier(clone.name))
    return replace(state, fragments=tuple(fragments), local=local)
