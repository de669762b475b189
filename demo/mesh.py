"""The demo mesh: TPC-H data spread over four domains and three store kinds, built once, reused.

``meshgate demo`` serves a self-contained mesh so anyone can try the gateway without a database
server. :func:`build_demo_mesh` generates TPC-H data with tpchgen-cli and lays it out the way real
domains would keep it::

    mesh.yaml                      # stores: sales_db (DuckDB), fulfillment_lake (Parquet files),
                                   #         supply_db and reference_db (SQLite)
    sales/customer.yaml            # sales.customer, sales.orders (v1 and v2) in stores/sales.duckdb
    sales/orders.yaml, sales/orders_v2.yaml
    fulfillment/lineitem.yaml      # Parquet files under stores/lake/lineitem/
    supply/{part,supplier,partsupp}.yaml     # stores/supply.sqlite
    reference/{nation,region}.yaml           # stores/reference.sqlite
    policies/README.md             # the governance group writes the rules
    principals.yaml                # admin, analyst, eu_analyst, guest (password = name)
    tpch/<table>.parquet           # the generated data, for comparisons (load_tpch_reference)

The mesh is built in a temporary sibling directory and renamed into place; a marker file written
last records the scale factor, so an interrupted build is never reused and a complete one is.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import textwrap
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from connectors.base import sql_string
from demo.tpch import (
    DemoBuildError,
    Progress,
    check_scale_factor,
    exclusive,
    generate_tpch,
    read_json,
    tpch_file,
    tpch_row_counts,
    write_json,
)
from gateway.types import arrow_type, serving_type

FORMAT_VERSION = 5  # 2: the demo policies; 3: audit.events; 4: denied_products; 5: SLOs, quality,
# deprecation
DEMO_POLICIES = Path(__file__).resolve().parent.parent / "policies" / "demo"
MARKER = ".meshgate-demo.json"
"""Written last: its presence means the mesh is complete; it records the scale factor."""
STAMP = ".meshgate-demo"
"""Written first: the directory belongs to ``meshgate demo``, which may replace it."""
TPCH_DIR = "tpch"
LAKE_ROWS_PER_GROUP = 122_880
LAKE_ROWS_PER_FILE = 2_000_000
PASSWORD_ROUNDS = 10


@dataclass(frozen=True)
class _Domain:
    store: str
    owner: str


@dataclass(frozen=True)
class _Table:
    """One TPC-H table published as a data product."""

    name: str
    domain: str
    description: str
    columns: tuple[tuple[str, str, str, str], ...]
    """(name, contract type, classification, description) in physical order."""
    lineage: tuple[str, ...] = ()
    freshness_column: str | None = None


STORES: dict[str, dict[str, str]] = {
    "sales_db": {"kind": "duckdb", "path": "stores/sales.duckdb"},
    "fulfillment_lake": {"kind": "files", "root": "stores/lake"},
    "supply_db": {"kind": "sqlite", "path": "stores/supply.sqlite"},
    "reference_db": {"kind": "sqlite", "path": "stores/reference.sqlite"},
    # the gateway's own audit trail (gateway.audit_log, audit/events.jsonl), read as a product
    "audit_log": {"kind": "files", "root": "audit"},
}

AUDIT_EVENTS: dict[str, Any] = {
    "product": "events",
    "version": 1,
    "owner": "governance@acme.example",
    "description": (
        "The gateway's audit trail: one row per query (answered, failed or denied) with who "
        "asked, what was read, the masks and row filters applied and the SQL sent to each store."
    ),
    "store": "audit_log",
    "table": "events.jsonl",
    "when_denied": "invisible",  # only the governance group may know the trail exists
    "columns": [
        {"name": n, "type": t, "description": d, "classification": c}
        for n, t, c, d in (
            ("time", "timestamp", "internal", "When the query ended (UTC)."),
            ("principal", "varchar", "confidential", "Who asked."),
            ("statement", "varchar", "confidential", "The SQL as the principal sent it."),
            ("products", "varchar", "internal", "Product addresses read (JSON list)."),
            ("masks", "varchar", "confidential", "Masked columns and their mask SQL (JSON)."),
            ("filters", "varchar", "confidential", "Row filters applied, per product (JSON)."),
            ("fragments", "varchar", "confidential", "The SQL sent to each store (JSON)."),
            ("rows", "bigint", "internal", "Rows returned to the client."),
            ("bytes", "bigint", "internal", "Arrow bytes returned to the client."),
            ("duration_ms", "double", "internal", "Milliseconds from execution to the end."),
            ("outcome", "varchar", "internal", "ok, denied or error."),
            ("error", "varchar", "confidential", "The error the client saw, if any."),
            ("engine", "varchar", "internal", "Where the cross-store part ran: local or Trino."),
            ("replica", "varchar", "internal", "The gateway process that served the query."),
        )
    ],
    "tags": ["governance", "demo"],
}

DOMAINS: dict[str, _Domain] = {
    "sales": _Domain("sales_db", "sales-data@acme.example"),
    "fulfillment": _Domain("fulfillment_lake", "fulfillment-data@acme.example"),
    "supply": _Domain("supply_db", "supply-data@acme.example"),
    "reference": _Domain("reference_db", "reference-data@acme.example"),
}


def _columns(table: str) -> tuple[tuple[str, str, str, str], ...]:
    """Parse a column table: ``name type classification description`` per line; a line indented
    deeper than the first continues the description above it."""
    columns: list[tuple[str, str, str, str]] = []
    for line in textwrap.dedent(table).strip("\n").splitlines():
        if line.startswith(" "):
            name, ctype, classification, text = columns[-1]
            columns[-1] = (name, ctype, classification, f"{text} {line.strip()}")
        else:
            name, ctype, classification, text = line.split(None, 3)
            columns.append((name, ctype, classification, text))
    return tuple(columns)


TABLES: tuple[_Table, ...] = (
    _Table(
        "customer",
        "sales",
        "One row per customer account: who buys from us, where they are and their balance.",
        _columns("""
            c_custkey     bigint         public    Customer id, unique per customer account.
            c_name        varchar        pii       Customer's registered name.
            c_address     varchar        pii       Customer's postal address.
            c_nationkey   bigint         public    Nation the customer is based in
                                                   (reference.nation).
            c_phone       varchar        pii       Phone number; the prefix is the country code.
            c_acctbal     decimal(15,2)  internal  Account balance in USD; negative when the
                                                   customer owes us.
            c_mktsegment  varchar        public    Market segment managing the account: AUTOMOBILE,
                                                   BUILDING, FURNITURE, HOUSEHOLD or MACHINERY.
            c_comment     varchar        internal  Free-text note from the account manager.
        """),
        lineage=("reference.nation",),
    ),
    _Table(
        "orders",
        "sales",
        "One row per order placed through any sales channel, with its total and status.",
        _columns("""
            o_orderkey       bigint         public    Order id, unique per order.
            o_custkey        bigint         public    Customer who placed the order
                                                      (sales.customer).
            o_orderstatus    varchar        public    Fulfilment status: F when every line has
                                                      shipped, O when none has, P when some have.
            o_totalprice     decimal(15,2)  public    Order total in USD: the lines' prices after
                                                      discount, plus tax.
            o_orderdate      date           public    Date the order was placed.
            o_orderpriority  varchar        public    Priority the customer chose, from 1-URGENT to
                                                      5-LOW.
            o_clerk          varchar        internal  Sales clerk who took the order.
            o_shippriority   integer        public    Shipping priority; 0 is normal.
            o_comment        varchar        internal  Free-text note on the order.
        """),
        lineage=("sales.customer",),
        freshness_column="o_orderdate",
    ),
    _Table(
        "lineitem",
        "fulfillment",
        "One row per order line shipped or to ship: quantities, prices, and the ship, commit and "
        "receipt dates that measure delivery performance.",
        _columns("""
            l_orderkey       bigint         public    Order the line belongs to (sales.orders).
            l_partkey        bigint         public    Part shipped (supply.part).
            l_suppkey        bigint         public    Supplier the part comes from (supply.supplier;
                                                      with l_partkey, supply.partsupp).
            l_linenumber     integer        public    Position of the line within its order, from 1.
            l_quantity       decimal(15,2)  public    Units ordered.
            l_extendedprice  decimal(15,2)  public    Line price in USD before discount and tax:
                                                      quantity times the part's retail price.
            l_discount       decimal(15,2)  public    Discount granted, as a fraction of the
                                                      extended price (0.00 to 0.10).
            l_tax            decimal(15,2)  public    Tax rate applied after the discount, as a
                                                      fraction (0.00 to 0.08).
            l_returnflag     varchar        public    R if the goods came back, A if accepted, N if
                                                      not yet received.
            l_linestatus     varchar        public    O while the line is open, F once it has
                                                      shipped.
            l_shipdate       date           public    Date the line left the warehouse.
            l_commitdate     date           public    Delivery date promised to the customer.
            l_receiptdate    date           public    Date the customer received the goods.
            l_shipinstruct   varchar        public    Delivery instruction: DELIVER IN PERSON,
                                                      COLLECT COD, TAKE BACK RETURN or NONE.
            l_shipmode       varchar        public    Transport used: AIR, REG AIR, MAIL, SHIP,
                                                      TRUCK, RAIL or FOB.
            l_comment        varchar        internal  Free-text note from the warehouse.
        """),
        lineage=("sales.orders", "supply.partsupp"),
    ),
    _Table(
        "part",
        "supply",
        "The parts catalogue: one row per part we sell, with its brand, type and list price.",
        _columns("""
            p_partkey      bigint         public    Part id, unique per part.
            p_name         varchar        public    Catalogue name of the part.
            p_mfgr         varchar        public    Manufacturer, Manufacturer#1 to #5.
            p_brand        varchar        public    Brand; Brand#MN is brand N of manufacturer M.
            p_type         varchar        public    Size class, finish and material, e.g. ECONOMY
                                                    ANODIZED STEEL.
            p_size         integer        public    Size in catalogue units, 1 to 50.
            p_container    varchar        public    Packaging, e.g. SM CASE or LG BOX.
            p_retailprice  decimal(15,2)  public    List price per unit in USD.
            p_comment      varchar        internal  Free-text note from product management.
        """),
    ),
    _Table(
        "supplier",
        "supply",
        "One row per supplier we buy parts from, with contact details and balance.",
        _columns("""
            s_suppkey    bigint         public    Supplier id, unique per supplier.
            s_name       varchar        pii       Supplier's registered name.
            s_address    varchar        pii       Supplier's postal address.
            s_nationkey  bigint         public    Nation the supplier is based in
                                                  (reference.nation).
            s_phone      varchar        pii       Phone number; the prefix is the country code.
            s_acctbal    decimal(15,2)  internal  What we owe the supplier in USD; negative when the
                                                  supplier owes us.
            s_comment    varchar        internal  Free-text note from procurement.
        """),
        lineage=("reference.nation",),
    ),
    _Table(
        "partsupp",
        "supply",
        "Which supplier offers which part: stock on hand and the price we pay per unit.",
        _columns("""
            ps_partkey     bigint         public    Part offered (supply.part).
            ps_suppkey     bigint         public    Supplier offering it (supply.supplier).
            ps_availqty    integer        public    Units the supplier has available.
            ps_supplycost  decimal(15,2)  internal  What the supplier charges us per unit, in USD.
            ps_comment     varchar        internal  Free-text note from procurement.
        """),
        lineage=("supply.part", "supply.supplier"),
    ),
    _Table(
        "nation",
        "reference",
        "The 25 nations customers and suppliers are based in, each in one region.",
        _columns("""
            n_nationkey  bigint   public    Nation id.
            n_name       varchar  public    Nation name in upper case, e.g. GERMANY.
            n_regionkey  bigint   public    Region the nation belongs to (reference.region).
            n_comment    varchar  internal  Free-text note.
        """),
        lineage=("reference.region",),
    ),
    _Table(
        "region",
        "reference",
        "The five world regions: AFRICA, AMERICA, ASIA, EUROPE and MIDDLE EAST.",
        _columns("""
            r_regionkey  bigint   public    Region id.
            r_name       varchar  public    Region name in upper case, e.g. EUROPE.
            r_comment    varchar  internal  Free-text note.
        """),
    ),
)
ORDERS_V2_SQL = """\
SELECT o_orderkey, o_custkey, o_orderstatus, o_totalprice, o_orderdate,
       CAST(EXTRACT(year FROM o_orderdate) AS INTEGER) AS o_orderyear,
       o_orderpriority, o_clerk, o_shippriority
FROM main.orders
"""
(ORDERS_V2_YEAR,) = _columns("""
    o_orderyear  integer  public  Calendar year of o_orderdate, for yearly reporting.
""")

PRINCIPALS: dict[str, dict[str, Any]] = {
    "admin": {"roles": ["admin"]},
    "analyst": {"roles": ["analyst"]},
    "eu_analyst": {"roles": ["analyst"], "attributes": {"region": "EUROPE"}},
    "guest": {"roles": ["guest"]},
}


def tpch_dir(mesh_dir: Path) -> Path:
    """Where a demo mesh keeps the TPC-H Parquet it was built from."""
    return Path(mesh_dir) / TPCH_DIR


# --- the mesh ---------------------------------------------------------------------------------


def build_demo_mesh(
    directory: Path, *, scale_factor: float = 0.01, progress: Progress = print
) -> Path:
    """Create the demo mesh in ``directory``, or reuse it if complete and of this scale factor.

    A directory that holds something else than a demo mesh is refused, never overwritten.
    Returns the absolute path of the mesh.
    """
    directory = Path(directory).absolute()
    scale_factor = check_scale_factor(scale_factor)
    if _is_complete(directory, scale_factor):
        progress(f"reusing demo mesh in {directory} (TPC-H SF {scale_factor:g})")
        return directory
    directory.parent.mkdir(parents=True, exist_ok=True)
    with exclusive(directory.parent):
        if _is_complete(directory, scale_factor):  # built by another process meanwhile
            progress(f"reusing demo mesh in {directory} (TPC-H SF {scale_factor:g})")
            return directory
        _check_replaceable(directory)
        for stage in ("building", "old"):  # left by a build that was killed
            for leftover in directory.parent.glob(f".{directory.name}.{stage}-*"):
                shutil.rmtree(leftover, ignore_errors=True)
        started = time.perf_counter()
        build = Path(tempfile.mkdtemp(prefix=f".{directory.name}.building-", dir=directory.parent))
        build.chmod(0o755)  # mkdtemp makes it private; the mesh is an ordinary directory
        try:
            _build(build, scale_factor, progress)
            _replace(directory, build)
        except BaseException:
            shutil.rmtree(build, ignore_errors=True)
            raise
    progress(f"demo mesh ready in {directory} ({time.perf_counter() - started:.1f} s)")
    return directory


def _build(build: Path, scale_factor: float, progress: Progress) -> None:
    """Everything a demo mesh holds, written into the fresh directory ``build``."""
    from connectors import KINDS
    from gateway.mesh import load_mesh

    (build / STAMP).write_text("Built by `meshgate demo`, which may replace this directory.\n")
    parquet_dir = generate_tpch(build / TPCH_DIR, scale_factor=scale_factor, progress=progress)
    rows = tpch_row_counts(parquet_dir)
    _check_generated_schemas(parquet_dir)
    _load_stores(build, parquet_dir, rows, progress)

    progress("writing descriptors, principals and mesh.yaml…")
    header = f"# Generated by `meshgate demo` from TPC-H SF {scale_factor:g}; edit freely.\n"
    # products a principal may not read are listed, and reading one names the owner to ask
    gateway = {"denied_products": "discoverable"}
    _write_yaml(build / "mesh.yaml", {"name": "acme", "stores": STORES, "gateway": gateway}, header)
    for table in TABLES:
        descriptor = _descriptor(table)
        if table.name == "orders":
            descriptor["deprecated"] = _orders_v1_deprecation()
        _write_yaml(build / table.domain / f"{table.name}.yaml", descriptor, header)
    orders = next(t for t in TABLES if t.name == "orders")
    v2 = _orders_v2_descriptor(orders)
    _write_yaml(build / "sales" / "orders_v2.yaml", {**v2, **_orders_v2_health(v2)}, header)
    (build / "audit").mkdir()
    (build / "audit" / "events.jsonl").touch()
    _write_yaml(build / "audit" / "events.yaml", AUDIT_EVENTS, header)
    _write_yaml(build / "principals.yaml", _principals(), header)
    (build / "policies").mkdir()
    (build / "policies" / "README.md").write_text(
        "Policies live here: the governance group's rules for who reads which product, "
        "which columns are masked and which rows each principal sees.\n"
    )
    for rules in sorted(DEMO_POLICIES.glob("*.yaml")):
        shutil.copyfile(rules, build / "policies" / rules.name)
    load_mesh(build, known_store_kinds=set(KINDS))  # never publish a mesh that does not load
    write_json(
        build / MARKER,
        {"format": FORMAT_VERSION, "scale_factor": scale_factor, "tpch": TPCH_DIR, "rows": rows},
    )


def _check_generated_schemas(parquet_dir: Path) -> None:
    """The generated columns must be the ones the descriptors promise, in the same order."""
    import pyarrow.parquet as pq

    for table in TABLES:
        schema = pq.read_schema(tpch_file(parquet_dir, table.name))
        found = [(f.name, serving_type(f.type)) for f in schema]
        expected = [(name, arrow_type(ctype)) for name, ctype, _, _ in table.columns]
        if found != expected:
            raise DemoBuildError(
                f"tpchgen-cli wrote {table.name} as {found}, the demo expects {expected}; "
                "install the tpchgen-cli version pinned in meshgate's pyproject.toml"
            )


def _load_stores(build: Path, parquet_dir: Path, rows: dict[str, int], progress: Progress) -> None:
    """Copy each domain's tables from the generated Parquet into the domain's own store."""
    import duckdb
    import duckdb_extensions

    con = duckdb.connect()
    try:
        if not os.environ.get("HOME"):  # duckdb_extensions installs under ~/.duckdb
            con.execute(f"SET home_directory = {sql_string(tempfile.gettempdir())}")
        duckdb_extensions.import_extension("sqlite_scanner", con=con)
        for domain, spec in DOMAINS.items():
            store = STORES[spec.store]
            tables = [t for t in TABLES if t.domain == domain]
            counts = ", ".join(f"{t.name} {rows[t.name]:,} rows" for t in tables)
            kind = store["kind"]
            if kind == "files":
                progress(f"writing {domain} as Parquet files in {store['root']} ({counts})…")
                for table in tables:
                    _write_lake_table(build / store["root"], table, parquet_dir, rows[table.name])
                continue
            path = build / store["path"]
            path.parent.mkdir(parents=True, exist_ok=True)
            if kind == "duckdb":
                progress(f"loading {domain} into DuckDB {store['path']} ({counts})…")
                con.execute(f"ATTACH {sql_string(path)} AS {spec.store}")
                for table in tables:
                    con.execute(_create_table_sql(table, f"{spec.store}.main.{table.name}"))
            else:  # sqlite: declare the contract types with SQLite itself, DuckDB only copies
                progress(f"loading {domain} into SQLite {store['path']} ({counts})…")
                _create_sqlite_tables(path, tables)
                con.execute(f"ATTACH {sql_string(path)} AS {spec.store} (TYPE sqlite)")
            for table in tables:
                names = ", ".join(name for name, *_ in table.columns)
                source = sql_string(tpch_file(parquet_dir, table.name))
                con.execute(
                    f"INSERT INTO {spec.store}.{table.name} "
                    f"SELECT {names} FROM read_parquet({source})"
                )
            con.execute(f"DETACH {spec.store}")
    finally:
        con.close()


def _create_table_sql(table: _Table, qualified_name: str) -> str:
    """DDL with the contract types, valid in both DuckDB and SQLite.

    No primary keys: below SF 0.01 tpchgen-cli repeats (ps_partkey, ps_suppkey) pairs.
    """
    columns = [f"{name} {ctype.upper()} NOT NULL" for name, ctype, _, _ in table.columns]
    return f"CREATE TABLE {qualified_name} ({', '.join(columns)})"


def _create_sqlite_tables(path: Path, tables: list[_Table]) -> None:
    import sqlite3

    connection = sqlite3.connect(path)
    try:
        with connection:
            for table in tables:
                connection.execute(_create_table_sql(table, table.name))
    finally:
        connection.close()


def _write_lake_table(root: Path, table: _Table, parquet_dir: Path, rows: int) -> None:
    """Rewrite one table as several Parquet files with plain ``utf8`` strings.

    tpchgen-cli writes ``string_view``, which many clients cannot read; the lake holds the
    contract types exactly.
    """
    import pyarrow as pa
    import pyarrow.dataset as ds

    dataset = ds.dataset(tpch_file(parquet_dir, table.name), format="parquet")
    schema = pa.schema(
        [
            pa.field(name, arrow_type(ctype), nullable=dataset.schema.field(name).nullable)
            for name, ctype, _, _ in table.columns
        ]
    )
    files = max(2, math.ceil(rows / LAKE_ROWS_PER_FILE))
    rows_per_file = max(1, math.ceil(rows / files))
    reader = dataset.scanner(batch_size=LAKE_ROWS_PER_GROUP).to_reader().cast(schema)
    ds.write_dataset(
        reader,
        root / table.name,
        format="parquet",
        basename_template=f"{table.name}-{{i}}.parquet",
        max_rows_per_file=rows_per_file,
        max_rows_per_group=min(LAKE_ROWS_PER_GROUP, rows_per_file),
        preserve_order=True,
    )


def _physical_table(table: _Table) -> str:
    kind = STORES[DOMAINS[table.domain].store]["kind"]
    return {"duckdb": f"main.{table.name}", "sqlite": table.name}.get(
        kind, f"{table.name}/*.parquet"
    )


def _descriptor(table: _Table, *, version: int = 1, sql: str | None = None) -> dict[str, Any]:
    """The descriptor of ``table``: its physical table, or the query ``sql`` in its store."""
    domain = DOMAINS[table.domain]
    descriptor: dict[str, Any] = {
        "product": table.name,
        "version": version,
        "owner": domain.owner,
        "description": table.description,
        "store": domain.store,
        **({"sql": sql} if sql else {"table": _physical_table(table)}),
        "columns": [
            {"name": name, "type": ctype, "description": text, "classification": classification}
            for name, ctype, classification, text in table.columns
        ],
    }
    if table.freshness_column:
        descriptor["slo"] = {"freshness": {"column": table.freshness_column, "max_age": "1d"}}
    if table.lineage:
        descriptor["lineage"] = list(table.lineage)
    descriptor["tags"] = ["tpch", "demo"]
    return descriptor


def _orders_v1_deprecation() -> dict[str, str]:
    """sales.orders_v1 is deprecated in favour of v2: since two weeks before the build, served
    for half a year after it."""
    import datetime as dt

    today = dt.datetime.now(dt.UTC).date()
    return {
        "since": (today - dt.timedelta(days=14)).isoformat(),
        "sunset": (today + dt.timedelta(days=180)).isoformat(),
        "replacement": "sales.orders_v2",
    }


def _orders_v2_health(v2: dict[str, Any]) -> dict[str, Any]:
    """What sales.orders v2 promises beyond its schema: SLOs and ODCS quality rules."""
    return {
        "slo": {
            **v2.get("slo", {}),
            "availability": {"min_percent": 99.5},
            "latency": {"p50_ms": 200, "p95_ms": 1000},
            "volume": {"min_rows": 1000},
        },
        "quality": [
            {"metric": "nullValues", "column": "o_orderkey"},
            {"metric": "duplicateValues", "column": "o_orderkey"},
            {
                "metric": "invalidValues",
                "column": "o_orderstatus",
                "arguments": {"validValues": ["F", "O", "P"]},
            },
            {
                "metric": "invalidValues",
                "column": "o_totalprice",
                "arguments": {"minimum": 0, "maximum": 1000000},
            },
        ],
    }


def _orders_v2_descriptor(orders: _Table) -> dict[str, Any]:
    """Version 2 of sales.orders: no free-text comment, and the order year for reporting."""
    columns: list[tuple[str, str, str, str]] = []
    for column in orders.columns:
        if column[0] != "o_comment":
            columns.append(column)
        if column[0] == "o_orderdate":
            columns.append(ORDERS_V2_YEAR)
    v2 = replace(
        orders,
        description=orders.description
        + " Version 2 drops the free-text comment and adds the order year.",
        columns=tuple(columns),
    )
    return _descriptor(v2, version=2, sql=ORDERS_V2_SQL)


def _principals() -> dict[str, Any]:
    """The demo users; each password is the user's name."""
    from gateway.principals import hash_password

    return {
        "principals": {
            name: {"password_hash": hash_password(name, rounds=PASSWORD_ROUNDS), **entry}
            for name, entry in PRINCIPALS.items()
        }
    }


# --- directory handling -----------------------------------------------------------------------


def _is_complete(directory: Path, scale_factor: float) -> bool:
    marker = read_json(directory / MARKER)
    return marker.get("format") == FORMAT_VERSION and marker.get("scale_factor") == scale_factor


def _check_replaceable(directory: Path) -> None:
    """Only an empty directory or one ``meshgate demo`` made may be replaced."""
    if not directory.exists():
        return
    if not directory.is_dir():
        raise DemoBuildError(f"{directory} is a file; give `meshgate demo` a directory")
    ours = (directory / STAMP).exists() or (directory / MARKER).exists()
    if not ours and any(directory.iterdir()):
        raise DemoBuildError(
            f"{directory} is not empty and is not a meshgate demo mesh; choose a new or empty "
            "directory for the demo"
        )


def _replace(directory: Path, build: Path) -> None:
    """Move ``build`` to ``directory``; the old content is moved aside first, then deleted."""
    if not directory.exists():
        build.rename(directory)
        return
    old = directory.with_name(f".{directory.name}.old-{os.getpid()}")
    directory.rename(old)
    build.rename(directory)
    shutil.rmtree(old, ignore_errors=True)


class _Dumper(yaml.SafeDumper):
    """Writes multi-line strings (SQL) as literal blocks."""


_Dumper.add_representer(
    str,
    lambda dumper, value: dumper.represent_scalar(
        "tag:yaml.org,2002:str", value, style="|" if "\n" in value else None
    ),
)


def _write_yaml(path: Path, content: dict[str, Any], header: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.dump(content, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)
    path.write_text(header + text, encoding="utf-8")
