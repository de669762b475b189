"""Who reads each product, from the audit trail: queries, distinct principals, last read.

The audit log (gateway.audit) is the one record of reads; this reads it with DuckDB's JSON
reader, summarised per product version over the last day and week, and keeps the summary until
the file changes (size or modification time) or a few seconds pass, so a page view does not
rescan the log.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gateway.mesh import Product

CACHE_SECONDS = 5.0


class UsageReader:
    """Usage per product version from one mesh's audit log."""

    def __init__(self, path: Path | None, products: Mapping[str, Product]):
        self.path = path
        self.products = products
        self._cached: tuple[tuple, float, dict[str, dict]] | None = None
        self._lock = threading.Lock()

    def _signature(self) -> tuple:
        try:
            stat = self.path.stat()
        except (OSError, AttributeError):
            return ()
        return (stat.st_size, stat.st_mtime_ns)

    def usage(self, product: Product) -> dict[str, Any]:
        """queries, distinct principals (day, week), last read and this week's readers."""
        summary = self._summary().get(product.versioned_address)
        if summary is None:
            return {
                "queries_day": 0,
                "queries_week": 0,
                "principals_day": 0,
                "principals_week": 0,
                "readers_week": [],
                "last_read": None,
            }
        return dict(summary)

    def _summary(self) -> dict[str, dict]:
        signature = self._signature()
        with self._lock:
            cached = self._cached
            if cached and cached[0] == signature and time.monotonic() - cached[1] < CACHE_SECONDS:
                return cached[2]
        summary = self._read() if signature else {}
        with self._lock:
            self._cached = (signature, time.monotonic(), summary)
        return summary

    def _read(self) -> dict[str, dict]:
        import duckdb

        con = duckdb.connect()
        try:
            con.execute("SET TimeZone = 'UTC'")
            # per address and principal, so distinct principals add up across a version's names
            rows = con.execute(
                """
                WITH reads AS (
                    SELECT CAST("time" AS TIMESTAMPTZ) AS read_at, principal,
                           unnest(products) AS address
                    FROM read_json(?, format = 'newline_delimited', ignore_errors = true,
                                   columns = {time: 'VARCHAR', principal: 'VARCHAR',
                                              outcome: 'VARCHAR', products: 'VARCHAR[]'})
                    WHERE outcome = 'ok' AND products IS NOT NULL
                )
                SELECT address, principal,
                       count(*) FILTER (WHERE read_at >= now() - INTERVAL 1 DAY) AS day,
                       count(*) FILTER (WHERE read_at >= now() - INTERVAL 7 DAY) AS week,
                       max(read_at) AS last_read
                FROM reads GROUP BY address, principal
                """,
                [str(self.path)],
            ).fetchall()
        finally:
            con.close()
        return self._fold(rows)

    def _fold(self, rows: list[tuple]) -> dict[str, dict]:
        found: dict[str, dict[str, Any]] = {}
        for address, principal, day, week, last_read in rows:
            product = self.products.get(address)
            if product is None:
                continue
            into = found.setdefault(
                product.versioned_address,
                {"queries_day": 0, "queries_week": 0, "day": set(), "week": set(), "last": None},
            )
            into["queries_day"] += day
            into["queries_week"] += week
            if day:
                into["day"].add(principal)
            if week:
                into["week"].add(principal)
            if last_read is not None and (into["last"] is None or last_read > into["last"]):
                into["last"] = last_read
        return {
            version: {
                "queries_day": v["queries_day"],
                "queries_week": v["queries_week"],
                "principals_day": len(v["day"]),
                "principals_week": len(v["week"]),
                "readers_week": sorted(v["week"]),
                "last_read": v["last"].isoformat(timespec="seconds") if v["last"] else None,
            }
            for version, v in found.items()
        }
