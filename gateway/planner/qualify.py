"""qualify_columns: every column names its relation, every star is expanded (sqlglot's qualify).

The pushdown rules after it need a fully qualified tree. Pushdown is an optimisation, so a query
sqlglot cannot qualify is left as it is and simply runs with less pushed down.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from sqlglot.errors import OptimizeError
from sqlglot.optimizer.qualify import qualify

from gateway.planner.sources import contract_schema
from gateway.planner.state import PlanState

log = logging.getLogger(__name__)


def qualify_columns(state: PlanState) -> PlanState:
    """The state with its tree qualified (``qualified``), or as it was if sqlglot cannot."""
    expression, context = state.tree, state.context
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
        return state
    return replace(state, expression=qualified, qualified=True)
