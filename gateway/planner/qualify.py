"""qualify_columns: every column names its relation, every star is expanded (sqlglot's qualify).

The pushdown rules after it need a fully qualified tree. Pushdown is an optimisation, so a query
sqlglot cannot qualify is left as it is and simply runs with less pushed down.
"""

from __future__ import annotations

import logging

from sqlglot import exp
from sqlglot.errors import OptimizeError
from sqlglot.optimizer.qualify import qualify

from gateway.planner.context import PlanContext
from gateway.planner.sources import contract_schema

log = logging.getLogger(__name__)

QUALIFIED = "qualified"


def is_qualified(expression: exp.Expression) -> bool:
    return bool(expression._meta and expression.meta.get(QUALIFIED))


def qualify_columns(expression: exp.Expression, *, context: PlanContext) -> exp.Expression:
    try:
        qualified = qualify(
            expression.copy(),
            schema=contract_schema(expression, context),
            dialect=context.dialect,
            quote_identifiers=True,
            validate_qualify_columns=True,
        )
    except (OptimizeError, ValueError, KeyError) as exc:
        log.debug("not qualified, so nothing is pushed down: %s", exc)
        return expression
    qualified.meta[QUALIFIED] = True
    return qualified
