"""PlanState: everything the planner's steps hand each other, declared in one place.

Each step of ``planner.PIPELINE`` is a pure function ``step(state) -> state``: it reads the fields
it needs and returns a copy with the fields it produces (``dataclasses.replace``). Nothing travels
between steps any other way: no ``meta`` keys on the tree, no module globals. Product references,
governed relations and fragments are marked by the names registered in ``planner.names``, which
every sqlglot rewrite carries along. A new rule is one module with one step, plus (if it produces
something new) one field here.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
from sqlglot import exp

from gateway.planner.context import PlanContext
from gateway.planner.dynamic_filters import DynamicFilter
from gateway.planner.transpile import Fragment


@dataclass(frozen=True)
class PlanState:
    """One query on its way through the pipeline; fields are filled in the order listed."""

    sql: str
    """The statement as the client sent it."""
    context: PlanContext
    """Mesh, principal, policies, connectors; ``context.route`` is set by ``route_query``."""
    parameters: tuple[object, ...] = ()
    """The values bound to the statement's ``?`` placeholders, in order."""
    expression: exp.Expression | None = None
    """The query as a tree: parsed (parse_sql), values bound (bind), product references
    normalised to ``<domain>.<product>`` tables (resolve_references), each replaced by its
    governed relation over a ``names.SOURCE`` placeholder (govern_references), then rewritten by
    the pushdown rules."""
    products: tuple[str, ...] = ()
    """The products the statement itself names, sorted (govern_references; not those only row
    filters read)."""
    schema: pa.Schema | None = None
    """The answer's Arrow schema, fixed once governed (infer_schema)."""
    qualified: bool = False
    """Every column names its relation and stars are expanded (qualify_columns); the pushdown
    rules only rewrite a qualified tree."""
    fragments: tuple[Fragment, ...] = ()
    """The queries sent to stores (split_by_store, unshare_fragments)."""
    local: exp.Expression | None = None
    """The query the local engine runs over the fragments; None when one fragment is the answer
    (split_by_store)."""
    dynamic_filters: tuple[DynamicFilter, ...] = ()
    """Which fragments narrow which others at run time (find_dynamic_filters)."""

    @property
    def tree(self) -> exp.Expression:
        """``expression``, which every step after parse may rely on."""
        assert self.expression is not None, "parse runs first"
        return self.expression
