"""Parse one statement and make sure it only reads: the first rule of every query's path."""

from __future__ import annotations

import logging
import re
from dataclasses import replace
from typing import TYPE_CHECKING

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from gateway.errors import InvalidQuery

if TYPE_CHECKING:
    from gateway.planner.state import PlanState

logging.getLogger("sqlglot").setLevel(logging.ERROR)

EXPLAIN = re.compile(r"^\s*explain\s+", re.IGNORECASE)

MAX_STATEMENT_CHARS = 1_000_000
"""Longer statements are refused before they are read: a megabyte of SQL is no query a person
or a BI tool writes, and every later step costs at least its length."""
MAX_NESTING = 100
"""Expressions nest at most this deep (parentheses, lists, function calls, CASE, subqueries; a
chain of one operator, ``a OR b OR ...``, is one level). Deeper ones are refused before any rule
recurses into them: sqlglot and the local engine recurse per level and failed with
RecursionError or DuckDB's expression depth limit."""
MAX_NODES = 100_000
"""Statements of more syntax nodes than this are refused: planning cost grows with them."""
MAX_CONDITIONS = 50
"""One AND or OR combines at most this many conditions. sqlglot's simplification, which the
pushdown rules run on every condition, grows faster than the square of a chain's length (300
conditions ANDed took minutes to plan, 1,000 ORed for ever); long lists of values belong in
``IN (...)``, which plans in linear time."""
MAX_OPERANDS = 200
"""One chain of an arithmetic or string operator (``1 + 1 + ...``, ``a || b || ...``) has at
most this many operands (400 took 2.9 s to plan)."""
_CHAINS = (exp.Connector, exp.Binary)

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


def _too_deep() -> InvalidQuery:
    return InvalidQuery(
        f"the statement nests expressions more than {MAX_NESTING} levels deep; meshgate refuses "
        "it: flatten the expression (an IN list for many values, a CTE for a nested query)"
    )


_OPEN = {"L_PAREN", "L_BRACKET", "L_BRACE"}
_CLOSE = {"R_PAREN", "R_BRACKET", "R_BRACE"}


def _check_brackets(sql: str, dialect: str) -> None:
    """Refuse brackets nested deeper than MAX_NESTING from the tokens, before parsing: sqlglot
    took 0.7 s to parse 300 nested parentheses and recursed past Python's limit on lists."""
    depth = 0
    for token in sqlglot.Dialect.get_or_raise(dialect).tokenize(sql):
        kind = token.token_type.name
        if kind in _OPEN:
            depth += 1
            if depth > MAX_NESTING:
                raise _too_deep()
        elif kind in _CLOSE:
            depth -= 1


def check_size(expression: exp.Expression) -> None:
    """InvalidQuery when ``expression`` nests deeper than MAX_NESTING or has more than MAX_NODES
    nodes; walked with a stack of its own, so the check itself never recurses."""
    nodes = 0
    stack: list[tuple[exp.Expression, int]] = [(expression, 0)]
    while stack:
        node, depth = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            raise InvalidQuery(
                f"the statement has more than {MAX_NODES:,} expressions; meshgate refuses it: "
                "bind long lists as parameters or join a product"
            )
        if depth > MAX_NESTING:
            raise _too_deep()
        if isinstance(node, _CHAINS) and type(node.parent) is not type(node):
            _check_chain(node)
        for child in node.iter_expressions():
            same_chain = isinstance(node, _CHAINS) and type(child) is type(node)
            stack.append((child, depth if same_chain else depth + 1))


def _check_chain(head: exp.Expression) -> None:
    """InvalidQuery when the chain of ``head``'s operator starting at ``head`` is too long."""
    limit = MAX_CONDITIONS if isinstance(head, exp.Connector) else MAX_OPERANDS
    operands, stack = 0, [head]
    while stack:
        node = stack.pop()
        for child in (node.this, node.expression):
            if type(child) is type(node):
                stack.append(child)
            else:
                operands += 1
    if operands > limit:
        operator = head.key.upper() if isinstance(head, exp.Connector) else head.key
        what = "conditions" if isinstance(head, exp.Connector) else "operands"
        raise InvalidQuery(
            f"one {operator} chain has {operands:,} {what}; meshgate plans at most {limit} in one "
            "chain: put lists of values in IN (...), or split the expression"
        )


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


def _check_writable(statement: exp.Expression, dialect: str) -> None:
    """InvalidQuery when sqlglot cannot write ``statement`` back as SQL: its parser accepts some
    functions with arguments of a kind they do not take (``NEXT_VALUE_FOR(TRUE, INTERVAL 3 DAY)``,
    ``DATETIME(d)``, ``BOOLNOT(x, TRUE)``), and every later step writes SQL (found by the fuzzer,
    as INTERNAL from the schema inference)."""
    try:
        statement.sql(dialect=dialect)
    except Exception as exc:  # noqa: BLE001 - the generator fails with TypeError and others
        function = next((f for f in statement.find_all(exp.Func) if _unwritable(f, dialect)), None)
        what = f"{function.sql_name().lower()}() with these arguments" if function else "it"
        raise InvalidQuery(
            f"the statement cannot be planned: meshgate cannot write {what} as SQL "
            f"({type(exc).__name__}); check the function's arguments"
        ) from None


def _unwritable(node: exp.Expression, dialect: str) -> bool:
    try:
        node.sql(dialect=dialect)
    except Exception:  # noqa: BLE001 - see _check_writable
        return True
    return False


def parse_sql(state: PlanState) -> PlanState:
    """The step: the statement as a tree (see :func:`parse_statement`)."""
    return replace(state, expression=parse_statement(state.sql, dialect=state.context.dialect))


def check_plannable(state: PlanState) -> PlanState:
    """The step: the state as it is, once :func:`refuse_unplannable` finds nothing to refuse."""
    refuse_unplannable(state.tree)
    return state


def refuse_unplannable(expression: exp.Expression) -> None:
    """InvalidQuery for what no plan can keep: COLUMNS(...) picks columns by a pattern (the
    projection pushdown removed the columns it would have matched), POSITIONAL JOIN pairs rows
    by an order federated products do not keep. Checked once the products are resolved and
    governed, so a principal who may not read them learns that first."""
    for node in expression.find_all(exp.Columns, exp.Join):
        if isinstance(node, exp.Columns):
            raise InvalidQuery(
                "COLUMNS(...) picks columns by a pattern, which meshgate cannot govern and prune "
                "column by column; name the columns you read"
            )
        if "POSITIONAL" in ((node.args.get("method") or "").upper(), node.text("kind").upper()):
            raise InvalidQuery(
                "POSITIONAL JOIN pairs rows by their order, which products read from several "
                "stores do not keep; join on a key"
            )


def split_explain(sql: str) -> tuple[bool, str]:
    """Whether ``sql`` asks for EXPLAIN, and the statement to explain."""
    match = EXPLAIN.match(sql)
    return (True, sql[match.end() :]) if match else (False, sql)


def parse_statement(sql: str, *, dialect: str) -> exp.Query:
    """The one read-only query in ``sql``; InvalidQuery for anything else.

    >>> parse_statement("SELECT 1 AS x", dialect="duckdb").sql()
    'SELECT 1 AS x'
    """
    if len(sql) > MAX_STATEMENT_CHARS:
        raise InvalidQuery(
            f"the statement is {len(sql):,} characters long; meshgate reads statements of at "
            f"most {MAX_STATEMENT_CHARS:,}: bind long lists as parameters or join a product"
        )
    statements = _parsed(sql, dialect)
    if not statements:
        raise InvalidQuery("the statement is empty; send one SELECT query")
    if len(statements) > 1:
        raise InvalidQuery(
            f"found {len(statements)} statements; send exactly one SELECT query per request"
        )
    statement = statements[0]
    check_size(statement)
    _check_writable(statement, dialect)
    _refuse_writes(statement)
    _refuse_forbidden_functions(statement)
    return statement


def _parsed(sql: str, dialect: str) -> list[exp.Expression]:
    """sqlglot's statements of ``sql``; InvalidQuery, in words a SQL user knows, when it
    cannot read them."""
    try:
        _check_brackets(sql, dialect)
        return [s for s in sqlglot.parse(sql, read=dialect) if s is not None]
    except InvalidQuery:
        raise
    except RecursionError:
        raise _too_deep() from None
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
    except Exception as exc:  # noqa: BLE001 - sqlglot's parser fails on some input with others
        raise InvalidQuery(
            f"syntax error: the statement cannot be read ({type(exc).__name__}); fix the SQL "
            f"(meshgate reads the {dialect} dialect)"
        ) from None


def _refuse_writes(statement: exp.Expression) -> None:
    """InvalidQuery for anything but a query, and for queries that write or lock."""
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


def _refuse_forbidden_functions(statement: exp.Expression) -> None:
    """InvalidQuery for a function that reads past the products (FORBIDDEN_FUNCTIONS)."""
    for function in statement.find_all(exp.Func):
        name = (
            function.name if isinstance(function, exp.Anonymous) else function.sql_name()
        ).lower()
        if name in FORBIDDEN_FUNCTIONS or name.startswith(FORBIDDEN_PREFIXES):
            raise InvalidQuery(
                f"function {name}() is not allowed: queries read data products by their address "
                "(<domain>.<product>) and nothing else"
            )
