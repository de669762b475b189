"""The planner: one pipeline of pure steps over one typed state, read top to bottom.

``plan_query`` takes SQL text and a principal and returns a :class:`Plan`: the fragments each
store runs, the query the local engine runs over them, and the schema of the answer. Each step is
``step(state) -> state`` over :class:`~gateway.planner.state.PlanState`, in a module named after
it; what a step hands on is a field of the state, and the names the planner gives the relations
it makes are registered in ``planner.names``. Nothing here touches a store.

To add a rule: write ``gateway/planner/<rule>.py`` with one step ``def <verb>_<what>(state:
PlanState) -> PlanState`` (pure: copy the tree before changing it, return ``replace(state,
...)``; not named like its module, which the package's attribute would then hide), add a field
to ``PlanState`` if it produces something new, and put the step in its place in ``PIPELINE``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import pyarrow as pa

from gateway.planner.context import PlanContext
from gateway.planner.dynamic_filters import DynamicFilter, find_dynamic_filters
from gateway.planner.factor_disjunctions import factor_disjunctions
from gateway.planner.govern import govern_references
from gateway.planner.group_joins import group_same_store_joins
from gateway.planner.parameters import Template, bind, in_limits, slots_of
from gateway.planner.parse import check_plannable, parse_sql
from gateway.planner.pin_decimals import pin_decimal_types
from gateway.planner.pushdown_predicates import push_down_predicates
from gateway.planner.pushdown_projections import push_down_projections
from gateway.planner.qualify import qualify_columns
from gateway.planner.resolve import resolve_references
from gateway.planner.route import LOCAL, route_query
from gateway.planner.schema import infer_schema
from gateway.planner.split import split_by_store
from gateway.planner.state import PlanState
from gateway.planner.transpile import Fragment
from gateway.planner.unshare import unshare_fragments

Step = Callable[[PlanState], PlanState]

PIPELINE: tuple[tuple[str, tuple[Step, ...]], ...] = (
    # what the statement says
    ("parse", (parse_sql, bind)),
    # what it means for this principal: after these, the answer's schema is fixed
    ("resolve", (resolve_references,)),
    ("govern", (govern_references, check_plannable)),
    # where it runs cheapest: rewrites that keep the answer and move work towards the stores
    (
        "optimize",
        (
            infer_schema,
            pin_decimal_types,
            route_query,
            qualify_columns,
            factor_disjunctions,
            push_down_predicates,
            push_down_projections,
            group_same_store_joins,
            split_by_store,
            unshare_fragments,
            find_dynamic_filters,
        ),
    ),
)
"""The phases of planning (each traced as one span) and their steps, in the order they run."""


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
    """The plan of ``sql``; ``step(name)`` wraps each phase of PIPELINE, which is how the
    gateway traces them."""
    state = PlanState(sql=sql, context=context, parameters=tuple(parameters or ()))
    for phase, steps in PIPELINE:
        with step(phase):
            for rule in steps:
                state = rule(state)
    return plan_of(state)


def plan_of(state: PlanState) -> Plan:
    """The plan a finished pipeline describes, for the executor to read."""
    assert state.schema is not None, "infer_schema ran"
    context, local = state.context, state.local
    local_sql = local.sql(dialect="duckdb") if local is not None else None
    local_slots = slots_of(local) if local is not None else frozenset()
    placed = local_slots.union(*(f.slots for f in state.fragments))
    # a value some rule folded into something else cannot be swapped for another one later
    in_limit = in_limits(state.sql, context.dialect)
    movable = {i for i, limited in enumerate(in_limit) if not limited}
    return Plan(
        statement=state.sql,
        products=state.products,
        fragments=state.fragments,
        local_sql=local_sql,
        schema=state.schema,
        dynamic_filters=state.dynamic_filters,
        parameters=state.parameters,
        reusable=movable <= placed,
        local_template=Template.of(local, "duckdb", local_sql) if local_sql else None,
        engine=context.route.engine,
        route=context.route.reason if context.engine is not None else "",
    )


def _same_values(left: Sequence[object], right: Sequence[object]) -> bool:
    return len(left) == len(right) and all(
        type(a) is type(b) and a == b for a, b in zip(left, right, strict=True)
    )
