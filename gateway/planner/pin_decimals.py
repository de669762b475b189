"""pin_decimal_outputs: computed decimals leave every store as the decimals they are.

PostgreSQL's ``sum(numeric(15,2))`` is an unconstrained NUMERIC, which its Arrow path can only
carry as a double; other stores widen or narrow in their own ways. Casting each computed decimal
output to the type the gateway promised makes the store send exactly that.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import pyarrow as pa
from sqlglot import exp

if TYPE_CHECKING:
    from gateway.planner.state import PlanState


def pin_decimal_types(state: PlanState) -> PlanState:
    """The step: computed decimal outputs cast to the schema's types (infer_schema runs first)."""
    assert state.schema is not None, "infer_schema runs first"
    return replace(state, expression=pin_decimal_outputs(state.tree, schema=state.schema))


def pin_decimal_outputs(expression: exp.Expression, *, schema: pa.Schema) -> exp.Expression:
    """Wrap the query's computed decimal outputs in ``CAST(... AS DECIMAL(p, s))``."""
    if not isinstance(expression, exp.Select) or len(expression.expressions) != len(schema):
        return expression
    if any(isinstance(p, exp.Star) for p in expression.expressions):
        return expression
    pinned = expression.copy()
    for projection, field in zip(pinned.expressions, schema, strict=True):
        value = projection.this if isinstance(projection, exp.Alias) else projection
        if not pa.types.is_decimal(field.type) or isinstance(value, (exp.Column, exp.Cast)):
            continue
        decimal = exp.DataType.build(f"DECIMAL({field.type.precision}, {field.type.scale})")
        value.replace(exp.cast(value.copy(), decimal))  # names follow the schema when served
    return pinned
