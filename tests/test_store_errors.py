"""One classification and one wording for every connector's store failures
(connectors/store_errors.py); test_faults.py and the conformance suite cause the real ones."""

from __future__ import annotations

import pytest

from connectors import mysql, postgres
from connectors.store_errors import kind_of, store_error
from gateway.errors import InvalidQuery, QueryTimeout, SourceUnavailable


@pytest.mark.parametrize(
    ("signs", "message", "kind"),
    [
        (
            postgres.ERROR_SIGNS,
            "FATAL: terminating connection due to administrator command",
            "unavailable",
        ),
        (postgres.ERROR_SIGNS, "ERROR: canceling statement due to statement timeout", "timeout"),
        (postgres.ERROR_SIGNS, 'ERROR: column "x" does not exist', "rejected"),
        # MariaDB's own deadline also says "interrupted": the timeout sign is looked for first
        (
            mysql.ERROR_SIGNS,
            "Query execution was interrupted (max_statement_time exceeded)",
            "timeout",
        ),
        (mysql.ERROR_SIGNS, "Query execution was interrupted", "unavailable"),
        (mysql.ERROR_SIGNS, "MySQL server has gone away", "unavailable"),
        (mysql.ERROR_SIGNS, "Unknown column 'x' in 'field list'", "rejected"),
    ],
)
def test_each_connector_declares_the_signs_of_its_failures(signs, message, kind):
    assert kind_of(message, signs) == kind


def test_every_kind_keeps_the_drivers_words_from_the_client():
    secret = "host pg.internal table public.orders_raw"
    errors = {
        kind: store_error(
            kind, store="sales", message=secret, where="pg.internal:5432", timeout_seconds=3
        )
        for kind in ("unavailable", "timeout", "rejected")
    }
    assert isinstance(errors["unavailable"], SourceUnavailable)
    assert isinstance(errors["timeout"], QueryTimeout)
    assert isinstance(errors["rejected"], InvalidQuery)
    for error in errors.values():
        shown = error.public or str(error)
        assert "'sales'" in shown and "pg.internal" not in shown and "orders_raw" not in shown
    assert "within 3 s" in str(errors["timeout"]) and "query_timeout_seconds" in str(
        errors["timeout"]
    )
    assert "retry" in errors["unavailable"].public
