"""Column masks: what a masked column becomes, as a SQL expression every store can run.

A mask is written once, in DuckDB's dialect; the planner transpiles it with sqlglot into each
store's dialect, so the masking happens at the store, before any row leaves it. Masks keep the
column's contract type where they can; a mask that cannot apply to a column's type (``partial`` on
a number, ``truncate_date`` on text) falls back to a typed NULL, never to the clear value.

>>> Mask("partial", "4").apply(exp.column("c_phone"), type="varchar", key="k").sql("duckdb")
"'****' || RIGHT(c_phone, 4)"
>>> Mask("truncate_date", "month").apply(exp.column("d"), type="date", key="k").sql("postgres")
"CAST(DATE_TRUNC('MONTH', d) AS DATE)"
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from sqlglot import exp

MASK_KINDS = ("null", "redact", "partial", "truncate_date", "hash")
"""Every mask kind a policy may name."""

STRENGTH = {"null": 5, "redact": 4, "hash": 3, "partial": 2, "truncate_date": 1}
"""When several masks apply to one column, the one that reveals least wins."""

REDACTED = "REDACTED"
PARTIAL_PREFIX = "****"
DEFAULT_PARTIAL_CHARS = 4
DEFAULT_TRUNCATE_UNIT = "month"

DATE_UNITS = ("year", "quarter", "month", "day")
TIMESTAMP_UNITS = (*DATE_UNITS, "hour")
"""Units whose truncation gives the same answer on DuckDB, PostgreSQL and MariaDB (tested).
``week`` is left out: sqlglot writes MySQL week truncation from 0000-01-01, not from a Monday."""

_T = exp.DataType.Type
_TIMESTAMPS = {_T.TIMESTAMP, _T.TIMESTAMPNTZ, _T.DATETIME, _T.TIMESTAMPTZ, _T.TIMESTAMPLTZ}
_HASHABLE = exp.DataType.TEXT_TYPES | exp.DataType.INTEGER_TYPES | {_T.DECIMAL, _T.DATE}
"""Types whose text form is the same on every store, so a hash of it joins across stores."""


@lru_cache(maxsize=256)
def _data_type(type_name: str) -> exp.DataType:
    return exp.DataType.build(type_name, dialect="duckdb")


def _is_text(type_name: str) -> bool:
    return _data_type(type_name).this in exp.DataType.TEXT_TYPES


def check_option(kind: str, option: str | None) -> str | None:
    """The normalised option of a mask kind; ValueError saying what is allowed otherwise."""
    if kind not in MASK_KINDS:
        raise ValueError(f"unknown mask {kind!r}; use one of {', '.join(MASK_KINDS)}")
    if kind == "partial":
        chars = DEFAULT_PARTIAL_CHARS if option is None else option
        if not str(chars).isdigit() or not 1 <= int(chars) <= 64:
            raise ValueError(
                f"partial keeps the last N characters; give N from 1 to 64, not {option!r}"
            )
        return str(int(chars))
    if kind == "truncate_date":
        unit = (option or DEFAULT_TRUNCATE_UNIT).lower()
        if unit not in TIMESTAMP_UNITS:
            raise ValueError(
                f"truncate_date unit {option!r} is not supported; use one of "
                f"{', '.join(TIMESTAMP_UNITS)}"
            )
        return unit
    if kind == "redact":
        return None if option is None else str(option)
    if option is not None:
        raise ValueError(f"mask {kind} takes no option; remove `option: {option}`")
    return None


@dataclass(frozen=True)
class Mask:
    """One column mask: its kind and option, e.g. ``Mask("partial", "4")``."""

    kind: str
    option: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "option", check_option(self.kind, self.option))

    def describe(self) -> str:
        return f"{self.kind}({self.option})" if self.option is not None else self.kind

    def fallback_reason(self, type: str) -> str | None:
        """Why this mask cannot apply to a column of contract type ``type`` (None if it can)."""
        this = _data_type(type).this
        if self.kind in ("partial", "redact") and this not in exp.DataType.TEXT_TYPES:
            return f"{self.kind} needs a text column"
        if self.kind == "hash" and this not in _HASHABLE:
            return "hash needs a text, integer, decimal or date column"
        if self.kind == "truncate_date":
            units = (
                DATE_UNITS if this == _T.DATE else TIMESTAMP_UNITS if this in _TIMESTAMPS else ()
            )
            if self.option not in units:
                return f"truncate_date({self.option}) needs a date or timestamp column"
        return None

    def effective(self, type: str) -> Mask:
        """The mask that really applies to a column of ``type``: itself, or a typed NULL."""
        return self if self.fallback_reason(type) is None else Mask("null")

    def result_type(self, type: str) -> str:
        """The contract type of the masked column: ``varchar`` for a hash, else unchanged."""
        return "varchar" if self.effective(type).kind == "hash" else type

    def apply(self, column: exp.Expression, *, type: str, key: str) -> exp.Expression:
        """The masked expression over ``column`` (a contract column of ``type``), in DuckDB's
        dialect. ``key`` is the mesh's secret hash key (see PolicyEngine.mask_key)."""
        mask = self.effective(type)
        column = column.copy()
        match mask.kind:
            case "null":
                return exp.cast(exp.null(), _data_type(type).copy())
            case "redact":
                return exp.Literal.string(mask.option if mask.option is not None else REDACTED)
            case "partial":
                kept = exp.Right(this=column, expression=exp.Literal.number(int(mask.option)))
                return exp.DPipe(
                    this=exp.Literal.string(PARTIAL_PREFIX), expression=kept, safe=True
                )
            case "truncate_date":
                unit = exp.Literal.string(mask.option)
                if _data_type(type).this == _T.DATE:
                    truncated = exp.DateTrunc(this=column, unit=unit)
                else:
                    truncated = exp.TimestampTrunc(this=column, unit=exp.var(mask.option.upper()))
                return exp.cast(truncated, _data_type(type).copy())
            case "hash":
                secret = exp.Literal.string(key)  # hide it in shown SQL: hide_mask_key
                text = column if _is_text(type) else exp.cast(column, exp.DataType.build("varchar"))
                return exp.MD5(this=exp.DPipe(this=secret, expression=text, safe=True))
        raise AssertionError(mask.kind)  # check_option admits only MASK_KINDS
