"""SQL statements for fuzzing the gateway: generated from a grammar over a mesh's products, and
mutated from valid ones.

Generation knows the products' columns and types and joins products on columns that share a
key name (``o_orderkey`` = ``l_orderkey``), so most generated statements are valid and reach the
planner, the stores and the local engine. Mutations then break them in the ways clients do and
attackers try: random tokens dropped, repeated or swapped, huge literals, unicode, deep nesting,
long boolean chains, and every function sqlglot knows with arguments of every kind. Everything is
drawn from one seeded ``random.Random``: a seed names a run.
"""

from __future__ import annotations

import random
import string
from collections.abc import Iterator
from dataclasses import dataclass, field

from sqlglot import tokenize
from sqlglot.dialects.duckdb import DuckDB

NUMERIC = ("bigint", "integer", "smallint", "tinyint", "double", "real", "decimal")
TEXT = ("varchar", "char", "text")


@dataclass(frozen=True)
class Product:
    address: str
    columns: tuple[tuple[str, str], ...]
    """(name, contract type) pairs."""

    def of(self, *kinds: str) -> list[str]:
        return [name for name, kind in self.columns if kind.lower().startswith(kinds)]


@dataclass(frozen=True)
class Statement:
    sql: str
    parameters: tuple[object, ...] = ()
    origin: str = "grammar"
    """How it was made: ``grammar`` or the mutation's name."""


def products_of(mesh) -> list[Product]:
    """The products of a loaded mesh (gateway.mesh.Mesh), versioned addresses included."""
    return [
        Product(address, tuple((c.name, c.type) for c in product.columns))
        for address, product in sorted(mesh.products.items())
    ]


@dataclass
class Generator:
    """Statements over ``products``, drawn from ``rng``."""

    products: list[Product]
    rng: random.Random
    functions: list[str] = field(default_factory=lambda: sorted(DuckDB.Parser.FUNCTIONS))

    # --- the grammar ---------------------------------------------------------------------

    def statement(self) -> Statement:
        """A statement from the grammar, most of them valid."""
        roll = self.rng.random()
        if roll < 0.08:
            return self._set_operation()
        if roll < 0.16:
            return self._with_cte()
        if roll < 0.24:
            return self._parameterised()
        return Statement(self._select())

    def _pick_join(self) -> list[tuple[Product, str]]:
        """One to three products, each joinable with the one before it on a shared key."""
        first = self.rng.choice(self.products)
        chosen = [(first, "t1")]
        for index in range(2, self.rng.choice((1, 1, 2, 2, 3)) + 1):
            last = chosen[-1][0]
            keys = {k.split("_", 1)[-1] for k in last.of(*NUMERIC) if k.endswith("key")}
            partners = [
                p
                for p in self.products
                if any(c.split("_", 1)[-1] in keys for c in p.of(*NUMERIC) if c.endswith("key"))
            ]
            if not partners:
                break
            chosen.append((self.rng.choice(partners), f"t{index}"))
        return chosen

    def _join_condition(self, left: tuple[Product, str], right: tuple[Product, str]) -> str:
        (lp, la), (rp, ra) = left, right
        pairs = [
            (a, b)
            for a in lp.of(*NUMERIC)
            for b in rp.of(*NUMERIC)
            if a.endswith("key") and a.split("_", 1)[-1] == b.split("_", 1)[-1]
        ]
        a, b = self.rng.choice(pairs)
        condition = f"{la}.{a} = {ra}.{b}"
        if self.rng.random() < 0.2:
            condition += f" AND {self._predicate([right])}"
        return condition

    def _column(self, relations: list[tuple[Product, str]], *kinds: str) -> str | None:
        options = [(alias, c) for p, alias in relations for c in (p.of(*kinds) if kinds else [])]
        if not kinds:
            options = [(alias, name) for p, alias in relations for name, _ in p.columns]
        if not options:
            return None
        alias, column = self.rng.choice(options)
        return f"{alias}.{column}"

    def literal(self) -> str:
        return self.rng.choice(
            [
                str(self.rng.randint(-5, 60_000)),
                f"{self.rng.uniform(-1000, 1000):.2f}",
                f"'{self.rng.choice(['AIR', 'MAIL', 'F', 'O', '1-URGENT', 'GERMANY', '%a%'])}'",
                f"DATE '199{self.rng.randint(2, 8)}-0{self.rng.randint(1, 9)}-"
                f"1{self.rng.randint(0, 9)}'",
                "NULL",
                "TRUE",
                "INTERVAL 3 DAY",
            ]
        )

    def _scalar(self, relations: list[tuple[Product, str]], depth: int = 0) -> str:
        roll = self.rng.random()
        number = self._column(relations, *NUMERIC)
        text = self._column(relations, *TEXT)
        date = self._column(relations, "date")
        if depth > 2 or roll < 0.35:
            return self._column(relations) or self.literal()
        if roll < 0.5 and number:
            op = self.rng.choice(["+", "-", "*", "/", "%"])
            return f"({number} {op} {self._scalar(relations, depth + 1)})"
        if roll < 0.62 and text:
            return self.rng.choice(
                [
                    f"upper({text})",
                    f"substr({text}, 1, {self.rng.randint(0, 5)})",
                    f"length({text})",
                    f"{text} || '-'",
                    f"coalesce({text}, 'none')",
                    f"starts_with({text}, 'A')",
                    f"contains({text}, 'E')",
                    f"regexp_matches({text}, '^[A-M]')",
                    f"{text} SIMILAR TO '%(A|B)%'",
                    f"repeat({text}, 2)",
                    f"hash({text})",
                ]
            )
        if roll < 0.72 and date:
            return self.rng.choice(
                [
                    f"year({date})",
                    f"date_trunc('month', {date})",
                    f"{date} + INTERVAL 1 DAY",
                    f"extract(month FROM {date})",
                    f"strftime({date}, '%Y')",
                ]
            )
        if roll < 0.82:
            return (
                f"CASE WHEN {self._predicate(relations, depth + 1)} THEN "
                f"{self._scalar(relations, depth + 1)} ELSE NULL END"
            )
        if roll < 0.9:
            return self.function_call(relations)
        kind = self.rng.choice(["VARCHAR", "BIGINT", "DOUBLE", "DATE", "DECIMAL(10,2)"])
        return f"CAST({self._scalar(relations, depth + 1)} AS {kind})"

    def function_call(self, relations: list[tuple[Product, str]]) -> str:
        """Any function sqlglot knows, with zero to three arguments of any kind."""
        name = self.rng.choice(self.functions)
        arguments = [
            self.rng.choice([self._column(relations) or "1", self.literal()])
            for _ in range(self.rng.randint(0, 3))
        ]
        return f"{name}({', '.join(arguments)})"

    def _predicate(self, relations: list[tuple[Product, str]], depth: int = 0) -> str:
        roll = self.rng.random()
        if depth < 2 and roll < 0.15:
            op = self.rng.choice(["AND", "OR"])
            return (
                f"({self._predicate(relations, depth + 1)} {op} "
                f"{self._predicate(relations, depth + 1)})"
            )
        if depth < 2 and roll < 0.2:
            return f"NOT ({self._predicate(relations, depth + 1)})"
        column = self._column(relations)
        number = self._column(relations, *NUMERIC) or column
        text = self._column(relations, *TEXT) or column
        choices = [
            f"{number} {self.rng.choice(['=', '<', '>', '<=', '>=', '<>'])} {self.literal()}",
            f"{number} BETWEEN {self.rng.randint(0, 100)} AND {self.rng.randint(100, 60_000)}",
            f"{number} IN ({', '.join(str(self.rng.randint(0, 2000)) for _ in range(6))})",
            f"{text} LIKE '{self.rng.choice(['A%', '%E%', '_B%', '%'])}'",
            f"{text} ILIKE '%a%'",
            f"{column} IS {self.rng.choice(['', 'NOT '])}NULL",
            f"{text} = {self.literal()}",
        ]
        if depth == 0 and self.rng.random() < 0.25:
            other = self.rng.choice(self.products)
            keys = other.of(*NUMERIC)
            if keys:
                key = self.rng.choice(keys)
                choices.append(
                    f"{number} {self.rng.choice(['IN', 'NOT IN'])} (SELECT {key} FROM "
                    f"{other.address} WHERE {key} < {self.rng.randint(1, 500)})"
                )
                choices.append(
                    f"{self.rng.choice(['', 'NOT '])}EXISTS (SELECT 1 FROM {other.address} s "
                    f"WHERE s.{key} = {number})"
                )
        return self.rng.choice(choices)

    def _select(self, *, columns: int | None = None) -> str:
        relations = self._pick_join()
        source = self._joined(relations)
        grouped = self.rng.random() < 0.35
        count = columns or self.rng.randint(1, 4)
        keys = [self._column(relations) for _ in range(self.rng.randint(1, 2))] if grouped else []
        items = [self._select_item(relations, keys if grouped else None, i) for i in range(count)]
        sql = f"SELECT {'DISTINCT ' if self.rng.random() < 0.1 else ''}"
        sql += ", ".join(f"{item} AS c{i}" for i, item in enumerate(items))
        sql += f" FROM {source}"
        if self.rng.random() < 0.7:
            sql += f" WHERE {self._predicate(relations)}"
        if grouped:
            how = self.rng.choice(["", "", "", "CUBE", "ROLLUP"])
            sql += f" GROUP BY {how} ({', '.join(keys)})" if how else f" GROUP BY {', '.join(keys)}"
            if self.rng.random() < 0.2:
                sql += f" HAVING count(*) > {self.rng.randint(0, 5)}"
        if self.rng.random() < 0.4:
            sql += f" ORDER BY {', '.join(str(i + 1) for i in range(len(items)))}"
        if self.rng.random() < 0.6:
            sql += f" LIMIT {self.rng.choice([0, 1, 10, 100, 1000])}"
            if self.rng.random() < 0.2:
                sql += f" OFFSET {self.rng.randint(0, 50)}"
        return sql

    def _joined(self, relations) -> str:
        """The FROM clause over ``relations``, each joined to the one before it."""
        source = f"{relations[0][0].address} AS {relations[0][1]}"
        for previous, current in zip(relations, relations[1:], strict=False):
            kind = self.rng.choice(["JOIN", "JOIN", "LEFT JOIN", "INNER JOIN", "RIGHT JOIN"])
            source += (
                f" {kind} {current[0].address} AS {current[1]} "
                f"ON {self._join_condition(previous, current)}"
            )
        return source

    def _select_item(self, relations, keys: list[str] | None, index: int) -> str:
        """The ``index``-th output column: a grouping key or an aggregate when grouped by
        ``keys``, else now and then a window function, mostly a scalar expression."""
        if keys is not None and index < len(keys):
            return keys[index]
        if keys is not None:
            argument = self._column(relations, *NUMERIC) or "*"
            aggregate = self.rng.choice(
                ["sum", "avg", "min", "max", "count", "count(DISTINCT", "sum(DISTINCT"]
            )
            return f"{aggregate} {argument})" if "(" in aggregate else f"{aggregate}({argument})"
        if self.rng.random() < 0.1:
            column = self._column(relations, *NUMERIC) or self._column(relations)
            return (
                f"{self.rng.choice(['row_number()', 'rank()', 'sum(' + column + ')'])} OVER "
                f"(PARTITION BY {self._column(relations)} ORDER BY {column})"
            )
        return self._scalar(relations)

    def _set_operation(self) -> Statement:
        width = self.rng.randint(1, 3)
        op = self.rng.choice(["UNION", "UNION ALL", "INTERSECT", "EXCEPT"])
        return Statement(f"{self._select(columns=width)} {op} {self._select(columns=width)}")

    def _with_cte(self) -> Statement:
        inner = self._select(columns=2)
        if self.rng.random() < 0.3:
            return Statement(
                "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < "
                f"{self.rng.randint(1, 50)}) SELECT count(*) FROM r"
            )
        return Statement(f"WITH q AS ({inner}) SELECT * FROM q a JOIN q b ON a.c0 = b.c0 LIMIT 50")

    def _parameterised(self) -> Statement:
        product = self.rng.choice(self.products)
        number = product.of(*NUMERIC)
        text = product.of(*TEXT)
        if number and (not text or self.rng.random() < 0.5):
            column, value = self.rng.choice(number), self.rng.choice([1, 7, -1, 10**12, 0.5])
        elif text:
            column, value = self.rng.choice(text), self.rng.choice(["AIR", "", "é", "x" * 300])
        else:
            return Statement(self._select())
        return Statement(
            f"SELECT * FROM {product.address} WHERE {column} = ? LIMIT 10", (value,), "parameters"
        )

    # --- mutations -----------------------------------------------------------------------

    def mutated(self, base: Statement) -> Statement:
        """``base`` broken in one of the ways listed in MUTATIONS."""
        name = self.rng.choice(MUTATIONS)
        return Statement(getattr(self, f"_mutate_{name}")(base.sql), base.parameters, name)

    def _tokens(self, sql: str) -> list[str]:
        try:
            tokens = tokenize(sql)
            return [t.text if t.token_type.name != "STRING" else f"'{t.text}'" for t in tokens]
        except Exception:  # noqa: BLE001 - a broken statement splits on spaces instead
            return sql.split()

    def _mutate_drop_token(self, sql: str) -> str:
        tokens = self._tokens(sql)
        if tokens:
            del tokens[self.rng.randrange(len(tokens))]
        return " ".join(tokens)

    def _mutate_repeat_token(self, sql: str) -> str:
        tokens = self._tokens(sql)
        if tokens:
            index = self.rng.randrange(len(tokens))
            tokens.insert(index, tokens[index])
        return " ".join(tokens)

    def _mutate_swap_tokens(self, sql: str) -> str:
        tokens = self._tokens(sql)
        if len(tokens) > 1:
            i, j = self.rng.randrange(len(tokens)), self.rng.randrange(len(tokens))
            tokens[i], tokens[j] = tokens[j], tokens[i]
        return " ".join(tokens)

    def _mutate_random_token(self, sql: str) -> str:
        tokens = self._tokens(sql)
        token = self.rng.choice(
            [
                "SELECT", "FROM", "WHERE", "(", ")", ",", "*", "JOIN", "ON", "NULL", "::", "[",
                "]", "{", "}", "->", "->>", "||", "?", "$1", "::INTERVAL", "LATERAL", "UNNEST",
                "POSITIONAL JOIN", "ASOF", "QUALIFY", "PIVOT", "EXCLUDE", "COLUMNS(*)", "#1",
                "USING SAMPLE 10%", "TABLESAMPLE", "LIMIT -1", "'", '"', ";", "--", "/*",
            ]
        )  # fmt: skip
        tokens.insert(self.rng.randrange(len(tokens) + 1), token)
        return " ".join(tokens)

    def _mutate_huge_literal(self, sql: str) -> str:
        huge = self.rng.choice(
            [
                "9" * self.rng.choice([20, 39, 400, 5000]),
                "1e308",
                "1e999",
                "-0.0000000000000000000000000000000000000001",
                "'" + "x" * self.rng.choice([1000, 100_000, 1_000_000]) + "'",
                "DATE '99999-12-31'",
                "INTERVAL 99999999999 YEAR",
                "TIMESTAMP '0001-01-01 00:00:00'",
            ]
        )
        tokens = self._tokens(sql)
        literals = [i for i, t in enumerate(tokens) if t[:1].isdigit() or t.startswith("'")]
        if literals:
            tokens[self.rng.choice(literals)] = huge
        else:
            tokens.insert(self.rng.randrange(len(tokens) + 1), huge)
        return " ".join(tokens)

    def _mutate_unicode(self, sql: str) -> str:
        text = self.rng.choice(
            [
                "'é日本語🙂'", "\"列\"", "'\u0000'", "'\ud7ff'", "'\u202e'", "ǅ", "'\\'",
                "'" + "🙂" * 1000 + "'", "\u00a0", "'\ufeff'",
            ]
        )  # fmt: skip
        tokens = self._tokens(sql)
        tokens.insert(self.rng.randrange(len(tokens) + 1), text)
        return " ".join(tokens)

    def _mutate_deep_nesting(self, sql: str) -> str:
        depth = self.rng.choice([50, 200, 500, 1000, 3000])
        kind = self.rng.choice(["parens", "lists", "not", "case", "subquery", "functions"])
        if kind == "parens":
            inner = "(" * depth + "1" + ")" * depth
        elif kind == "lists":
            inner = "[" * depth + "1" + "]" * depth
        elif kind == "not":
            inner = "NOT " * depth + "TRUE"
        elif kind == "case":
            inner = "CASE WHEN TRUE THEN " * depth + "1" + " END" * depth
        elif kind == "subquery":
            inner = "(SELECT " * min(depth, 300) + "1" + ")" * min(depth, 300)
        else:
            inner = "abs(" * depth + "1" + ")" * depth
        return sql.replace("SELECT ", f"SELECT {inner} AS deep, ", 1)

    def _mutate_long_chain(self, sql: str) -> str:
        terms = self.rng.choice([100, 400, 1000, 3000])
        product = self.rng.choice(self.products)
        column = (product.of(*NUMERIC) or [product.columns[0][0]])[0]
        kind = self.rng.choice(["or_of_ands", "plus", "in_list", "and"])
        if kind == "or_of_ands":
            chain = " OR ".join(f"({column} = {i} AND {column} > {i - 1})" for i in range(terms))
            return f"SELECT count(*) FROM {product.address} WHERE {chain}"
        if kind == "plus":
            return "SELECT " + " + ".join(["1"] * terms)
        if kind == "in_list":
            values = ", ".join(str(i) for i in range(terms * 10))
            return f"SELECT count(*) FROM {product.address} WHERE {column} IN ({values})"
        chain = " AND ".join(f"{column} <> {i}" for i in range(terms))
        return f"SELECT count(*) FROM {product.address} WHERE {chain}"

    def _mutate_function(self, sql: str) -> str:
        relations = [(self.rng.choice(self.products), "t1")]
        product = relations[0][0]
        return f"SELECT {self.function_call(relations)} FROM {product.address} AS t1 LIMIT 5"

    def _mutate_characters(self, sql: str) -> str:
        characters = list(sql)
        for _ in range(self.rng.randint(1, 5)):
            index = self.rng.randrange(len(characters) + 1)
            characters.insert(index, self.rng.choice(string.printable))
        return "".join(characters)


MUTATIONS = (
    "drop_token",
    "repeat_token",
    "swap_tokens",
    "random_token",
    "huge_literal",
    "unicode",
    "deep_nesting",
    "long_chain",
    "function",
    "characters",
)


def statements(products: list[Product], *, seed: int, count: int) -> Iterator[Statement]:
    """``count`` statements: about half from the grammar, half mutations of grammar ones."""
    generator = Generator(products, random.Random(seed))
    for _ in range(count):
        base = generator.statement()
        yield base if generator.rng.random() < 0.45 else generator.mutated(base)
