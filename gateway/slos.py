"""SLO and quality statuses as pure functions of what was measured.

Each returns ``met``, ``at_risk``, ``broken`` or ``unknown`` (nothing measured yet). *At risk*
means the objective still holds but with less than a fifth of its margin left (freshness,
latency), close to the bound (volume), or the store is up again after a recent outage
(availability). The monitor (gateway.monitor) measures; these functions judge, so the thresholds
are tested without a store.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

MET, AT_RISK, BROKEN, UNKNOWN = "met", "at_risk", "broken", "unknown"
RISK_FRACTION = 0.8
"""A measure past this fraction of its limit is at risk."""


def freshness_status(age_seconds: float | None, max_age_seconds: float) -> str:
    """Broken past ``max_age``, at risk past four fifths of it.

    >>> freshness_status(3600, 86400), freshness_status(80000, 86400), freshness_status(9e5, 1)
    ('met', 'at_risk', 'broken')
    """
    if age_seconds is None:
        return UNKNOWN
    if age_seconds > max_age_seconds:
        return BROKEN
    return AT_RISK if age_seconds > RISK_FRACTION * max_age_seconds else MET


def availability_status(outcomes: Sequence[bool], min_percent: float) -> str:
    """``outcomes`` oldest first (True = the store answered). Broken while the latest failed;
    at risk when it is up but the window's share of successes is below the objective."""
    if not outcomes:
        return UNKNOWN
    if not outcomes[-1]:
        return BROKEN
    return AT_RISK if availability_percent(outcomes) < min_percent else MET


def availability_percent(outcomes: Sequence[bool]) -> float:
    return 100.0 * sum(outcomes) / len(outcomes) if outcomes else 0.0


def percentile(samples: Sequence[float], q: int) -> float | None:
    """The ``q``-th percentile (1..99) of ``samples``, None when there are none."""
    if not samples:
        return None
    if len(samples) == 1:
        return float(samples[0])
    return statistics.quantiles(samples, n=100, method="inclusive")[q - 1]


def latency_status(samples: Sequence[float], *, p50_ms: float | None, p95_ms: float | None) -> str:
    """Broken when a measured percentile is over its objective."""
    if not samples:
        return UNKNOWN
    statuses = []
    for q, objective in ((50, p50_ms), (95, p95_ms)):
        if objective is None:
            continue
        measured = percentile(samples, q)
        statuses.append(
            BROKEN
            if measured > objective
            else AT_RISK
            if measured > RISK_FRACTION * objective
            else MET
        )
    return worst_status(statuses) if statuses else UNKNOWN


def volume_status(rows: int | None, *, min_rows: int | None, max_rows: int | None) -> str:
    """Broken outside [min_rows, max_rows]; at risk within a tenth of a bound."""
    if rows is None:
        return UNKNOWN
    if (min_rows is not None and rows < min_rows) or (max_rows is not None and rows > max_rows):
        return BROKEN
    if min_rows is not None and rows < min_rows * 1.1:
        return AT_RISK
    if max_rows is not None and rows > max_rows * 0.9:
        return AT_RISK
    return MET


def passes(value: float, operator: str, operand: Any) -> bool:
    """Whether a measured quality ``value`` passes an ODCS operator.

    >>> passes(0, "mustBe", 0), passes(3, "mustBeLessThan", 3), passes(5, "mustBeBetween", [1, 9])
    (True, False, True)
    """
    match operator:
        case "mustBe":
            return value == operand
        case "mustNotBe":
            return value != operand
        case "mustBeGreaterThan":
            return value > operand
        case "mustBeGreaterOrEqualTo":
            return value >= operand
        case "mustBeLessThan":
            return value < operand
        case "mustBeLessOrEqualTo":
            return value <= operand
        case "mustBeBetween":
            low, high = operand
            return low <= value <= high
    raise ValueError(f"unknown quality operator {operator!r}")


def quality_status(value: float | None, operator: str, operand: Any) -> str:
    if value is None:
        return UNKNOWN
    return MET if passes(value, operator, operand) else BROKEN


def worst_status(statuses: Sequence[str]) -> str:
    """The worst of ``statuses``: broken, then at risk, then met (unknown if none).

    >>> worst_status(["met", "broken", "at_risk"])
    'broken'
    """
    for status in (BROKEN, AT_RISK, MET):
        if status in statuses:
            return status
    return UNKNOWN
