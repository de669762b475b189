"""Parse one statement and make sure it only reads: the first rule of every query's path."""

from __future__ import annotations

import logging
import re

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from gateway.errors import InvalidQuery

logging.getLogger("sqlglot").setLevel(logging.ERROR)

EXPLAIN = re.compile(r"^\s*explain\s+", re.IGNORECASE)

# Functions that read files, other databases or the server's environment, run SQL given as text,
# or describe what the store really runs (current_query() returns the governed SQL with physical
# names, row filters and the hash key; stats() describes every stored row, hidden ones too). They
# are refused in every position, so no query can reach past the products it names (the stores' own
# accounts should be read-only as well; see the README's deployment notes).
FORBIDDEN_FUNCTIONS = frozenset(
    {
        "dblink", "getenv", "glob", "load_file", "lo_export", "lo_import", "mysql_query",
        "postgres_query", "postgres_scan", "query", "query_table", "read_blob", "read_csv",
        "read_csv_auto", "read_json", "read_json_auto", "read_ndjson", "read_parquet", "read_text",
        "parquet_scan", "sqlite_scan", "sqlite_query", "sys_eval", "sys_exec", "current_setting",
        "set_config", "txid_current", "pg_sleep", "sleep", "benchmark",
        "current_query", "stats", "current_database", "current_catalog", "current_schema",
        "current_schemas", "current_user", "session_user", "current_role", "user",
        "inet_server_addr", "inet_server_port", "connection_id", "json_execute_serialized_sql",
        "query_to_xml", "query_to_xml_and_xmlschema", "query_to_xmlschema", "cursor_to_xml",
        "table_to_xml", "table_to_xml_and_xmlschema", "table_to_xmlschema", "schema_to_xml",
        "database_to_xml", "ts_stat", "ts_rewrite",
    }
)  # fmt: skip
FORBIDDEN_PREFIXES = ("pg_", "duckdb_", "sqlite_", "mysql_", "sys_", "lo_")


_TOKEN = re.compile(r"<Token token_type: TokenType\.(\w+), text: (.*?), line: [^>]*>")
_MISSING = re.compile(r"Required keyword: '(\w+)' missing for <class '[\w.]*\.(\w+)'>")
_COMPARISONS = {"EQ", "NEQ", "GT", "GTE", "LT", "LTE", "Like", "ILike", "Is"}
_CLAUSES = {"Where": "WHERE", "Having": "HAVING", "Qualify": "QUALIFY", "Join": "JOIN ... ON"}


def describe_syntax_error(description: str) -> str:
    """sqlglot's description of a parse error in words a SQL user knows, without its class
    names and token dumps.

    >>> describe_syntax_error("Required keyword: 'this' missing for <class 'sqlglot.expressions.query.Where'>")
    'WHERE needs a condition'
    >>> describe_syntax_error("Expected table name but got <Token token_type: TokenType.SENTINEL, text: SENTINEL, line: 1, col: 1>")
    'expected a table name but the statement ended'
    """  # noqa: E501
    missing = _MISSING.search(description)
    if missing:
        _, node = missing.groups()
        if node in _CLAUSES:
            return f"{_CLAUSES[node]} needs a condition"
        if node in _COMPARISONS:
            return "a comparison needs a value on each side"
        return f"an incomplete {re.sub(r'(?<!^)(?=[A-Z])', ' ', node).lower()}"

    def token(match: re.Match) -> str:
        kind, text = match.groups()
        return "the statement ended" if kind == "SENTINEL" else f"found {text!r}"

    text = _TOKEN.sub(token, description)
    text = text.replace("Expected table name but got", "expected a table name but")
    text = text.replace("Invalid expression / Unexpected token", "unexpected token")
    text = re.sub(r"^Expecting (\S+)", r"expected \1", text)
    return re.sub(r"<class '[\w.]*\.(\w+)'>", r"\1", text)


def split_explain(sql: str) -> tuple[bool, str]:
    """Whether ``sql`` asks for EXPLAIN, and the statement to explain."""
    match = EXPLAIN.match(sql)
    return (True, sql[match.end() :]) if match else (False, sql)


def parse_statement(sql: str, *, dialect: str) -> exp.Query:
    """The one read-only query in ``sql``; InvalidQuery for anything else.

    >>> parse_statement("SELECT 1 AS x", dialect="duckdb").sql()
    'SELECT 1 AS x'
    """
    try:
        statements = [s for s in sqlglot.parse(sql, read=dialect) if s is not None]
    except ParseError as exc:
        first = exc.errors[0] if exc.errors else {}
        where = f" at line {first.get('line')}, column {first.get('col')}" if first else ""
        near = f" near {first.get('highlight')!r}" if first.get("highlight") else ""
        description = describe_syntax_error(str(first.get("description", exc)))
        raise InvalidQuery(
            f"syntax error{where}{near}: {description}; fix the SQL "
            f"(meshgate reads the {dialect} dialect)"
        ) from None
    except TokenError:
        raise InvalidQuery(
            "syntax error: a quoted string or identifier is not closed; fix the SQL"
        ) from None
    if not statements:
        raise InvalidQuery("the statement is empty; send one SELECT query")
    if len(statements) > 1:
        raise InvalidQuery(
            f"found {len(statements)} statements; send exactly one SELECT query per request"
        )
    statement = statements[0]
    if not isinstance(statement, exp.Query):
        kind = statement.key.upper() if not isinstance(statement, exp.Command) else statement.this
        raise InvalidQuery(
            f"{kind} statements are not allowed: meshgate is read-only and runs one SELECT query "
            "over data products"
        )
    for select in statement.find_all(exp.Select):
        if select.args.get("into"):
            raise InvalidQuery("SELECT ... INTO writes a table; meshgate is read-only")
        if select.args.get("locks"):
            raise InvalidQuery("SELECT ... FOR UPDATE/SHARE takes locks; meshgate is read-only")
    for function in statement.find_all(exp.Func):
        name = (
            function.name if isinstance(function, exp.Anonymous) else function.sql_name()
        ).lower()
        if name in FORBIDDEN_FUNCTIONS or name.startswith(FORBIDDEN_PREFIXES):
            raise InvalidQuery(
                f"function {name}() is not allowed: queries read data products by their address "
                "(<domain>.<product>) and nothing else"
            )
    return statement
