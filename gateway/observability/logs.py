"""Structured logs: with ``log_format: json`` every log line is one JSON object carrying the
query id, principal and trace id of the query it was logged for, so a log line joins the audit
event, the trace and the OpenLineage run of its query."""

from __future__ import annotations

import contextvars
import json
import logging
from datetime import UTC, datetime

CURRENT_QUERY: contextvars.ContextVar[tuple[str, str, str | None] | None] = contextvars.ContextVar(
    "meshgate_query", default=None
)
"""(query id, principal, trace id) of the query the current thread works for."""


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, the query's ids, exception."""

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        query = CURRENT_QUERY.get()
        if query is not None:
            fields["query_id"], fields["principal"], fields["trace_id"] = query
        if record.exc_info:
            fields["exception"] = self.formatException(record.exc_info)
        return json.dumps(fields, ensure_ascii=False, default=str)


def use_json_logs(handler: logging.Handler | None = None) -> logging.Handler:
    """Format the root logger's handlers (or ``handler``) as JSON lines."""
    handlers = [handler] if handler is not None else logging.getLogger().handlers
    if not handlers:
        handlers = [logging.StreamHandler()]
        logging.getLogger().addHandler(handlers[0])
    for each in handlers:
        each.setFormatter(JsonFormatter())
    return handlers[0]
