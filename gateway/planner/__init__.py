"""The planner: one pure rewrite per module, applied in the order of RULES.

``plan_query`` takes SQL text and a principal and returns a :class:`Plan`: the fragments each
store runs, the query the local engine runs over them, and the schema of the answer. Between
governance and pushdown, ``choose_route`` decides whether the cross-store part runs on the mesh's
Trino engine (``route.py``); the route travels to the later rules in the context, and the plan
says which engine runs what. Nothing here touches a store.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import pyarrow as pa
from sqlglot import exp

from gateway.planner.context import PlanContext
from gateway.planner.dynamic_filters import DynamicFilter, find_dynamic_filters
from gateway.planner.factor_disjunctions import factor_disjunctions
from gateway.planner.govern import apply_governance
from gateway.planner.group_joins import group_same_store_joins
from gateway.planner.parameters import Template, bind_parameters, in_limits, slots_of
from gateway.planner.parse import parse_statement, refuse_unplannable
from gateway.planner.pin_decimals import pin_decimal_outputs
from gateway.planner.pushdown_predicates import push_down_predicates
from gateway.planner.pushdown_projections import push_down_projections
from gateway.planner.qualify import qualify_columns
from gateway.planner.resolve import resolve_products
from gateway.planner.route import LOCAL, choose_route
from gateway.planner.schema import infer_schema
from gateway.planner.sources import source_address, sources_of
from gateway.planner.split import Fragment, split_by_store
from gateway.planner.unshare import unshare_fragments

Rule = Callable[..., exp.Expression]

RULES: tuple[Rule, ...] = (
    resolve_products,
    apply_governance,
)
"""What the query means for this principal: after these, the answer's schema is fixed."""

PUSHDOWN: tuple[Rule, ...] = (
    qualify_columns,
    factor_disjunctions,
    push_down_predicates,
    push_down_projections,
    group_same_store_joins,
)
"""Where it runs cheapest: rewrites that keep the answer and move work towards the stores."""


@dataclass(frozen=True)
class Plan:
    statement: str
    products: tuple[str, ...]
    fragments: tuple[Fragment, ...]
    local_sql: str | None
    schema: pa.Schema
    dynamic_filters: tuple[DynamicFilter, ...] = ()
    parameters: tuple[object, ...] = ()
    """The values bound in the fragments' and the local query's SQL."""
    reusable: bool = True
    """Whether other values of the same classes may be bound into this plan (see ``bind``)."""
    local_template: Template | None = field(default=None, compare=False, repr=False)
    engine: str = LOCAL
    """Where the cross-store part runs: ``local`` (the embedded DuckDB) or the engine's name."""
    route: str = ""
    """Why it runs there (empty when the mesh names no engine)."""

    def bind(self, parameters: Sequence[object]) -> Plan:
        """This plan with ``parameters`` bound instead of the values it was planned with: values
        of the same classes (planner.parameters.shape_key), in a reusable plan."""
        if _same_values(parameters, self.parameters):
            return self
        if not self.reusable:
            raise ValueError("this plan holds its values in places other values cannot go")
        local = self.local_template
        return replace(
            self,
            fragments=tuple(f.bind(parameters) for f in self.fragments),
            local_sql=self.local_sql if local is None else local.render(parameters),
            parameters=tuple(parameters),
        )

    def explain(self) -> str:
        lines = [f"engine: {self.engine} ({self.route})"] if self.route else []
        for fragment in self.fragments:
            target = "the answer" if self.local_sql is None else fragment.name
            where = "engine" if fragment.store == self.engine else "store"
            lines.append(f"fragment {target} runs on {where} {fragment.store!r}:")
            lines.append(f"  {fragment.sql}")
        if self.local_sql is not None:
            lines.append("runs locally in DuckDB over the fragments:")
            lines.append(f"  {self.local_sql}")
        lines.extend(f"dynamic filter: {f.describe()}" for f in self.dynamic_filters)
        return "\n".join(lines)


def _no_step(name: str) -> contextlib.AbstractContextManager:
    return contextlib.nullcontext()


def plan_query(
    sql: str,
    *,
    context: PlanContext,
    parameters: list[object] | None = None,
    step: Callable[[str], contextlib.AbstractContextManager] = _no_step,
) -> Plan:
    """The plan of ``sql``; ``step(name)`` wraps each step (parse, each rule, optimize), which
    is how the gateway traces them."""
    parameters = tuple(parameters or ())
    with step("parse"):
        expression: exp.Expression = parse_statement(sql, dialect=context.dialect)
        expression = bind_parameters(expression, parameters)
    for rule in RULES:
        with step(rule.__name__):
            expression = rule(expression, context=context)
    refuse_unplannable(expression)
    with step("optimize"):
        return _optimized(sql, expression, context=context, parameters=parameters)


def _optimized(
    sql: str, expression: exp.Expression, *, context: PlanContext, parameters: tuple
) -> Plan:
    """The plan of a governed ``expression``: pushed down, split by store, transpiled."""
    schema = infer_schema(expression, context=context)
    products = tuple(sorted(named_products(expression)))
    expression = pin_decimal_outputs(expression, schema=schema)
    addresses = {source_address(s) for s in sources_of(expression)}
    homes = {a: context.mesh.products[a].store for a in addresses}
    route = choose_route(addresses, homes=homes, engine=context.engine)
    context = replace(context, route=route)
    for rule in PUSHDOWN:
        expression = rule(expression, context=context)
    split = unshare_fragments(split_by_store(expression, context=context), context=context)
    local_sql = split.local.sql(dialect="duckdb") if split.local is not None else None
    dynamic = (
        find_dynamic_filters(split.local, split.fragments, context=context) if split.local else ()
    )
    local_slots = slots_of(split.local) if split.local is not None else frozenset()
    placed = local_slots.union(*(f.slots for f in split.fragments))
    # a value some rule folded into something else cannot be swapped for another one later
    movable = {i for i, in_limit in enumerate(in_limits(sql, context.dialect)) if not in_limit}
    return Plan(
        statement=sql,
        products=products,
        fragments=split.fragments,
        local_sql=local_sql,
        schema=schema,
        dynamic_filters=dynamic,
        parameters=parameters,
        reusable=movable <= placed,
        local_template=Template.of(split.local, "duckdb", local_sql) if local_sql else None,
        engine=route.engine,
        route=route.reason if context.engine is not None else "",
    )


def _same_values(left: Sequence[object], right: Sequence[object]) -> bool:
    return len(left) == len(right) and all(
        type(a) is type(b) and a == b for a, b in zip(left, right, strict=True)
    )


def named_products(expression: exp.Expression) -> set[str]:
    """The products the statement itself names (not those only its row filters read)."""
    return {
        node.meta["governed"]
        for node in expression.find_all(exp.Subquery)
        if node._meta and node.meta.get("depth") == 0
    }
