"""Cross-store queries run on the real Trino 476 as meshgate's engine (issue 17).

The federated TPC-H mesh (tests/support/tpch_mesh.py) is routed through Trino
(tests/support/trino_mesh.py): PostgreSQL, MariaDB and the Parquet lake are reached through
Trino's catalogs; SQLite is not, so with the mesh's SQLite reference domain Trino runs the part
over the other stores and the local engine joins nation and region (``reference="sqlite"``); with
the reference copied into PostgreSQL every TPC-H query runs on Trino whole. Answers are compared
with DuckDB over the same data, value by value, as the local engine's tests do.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.service import Gateway
from tests import test_tpch_federated as federated
from tests.support.stores import MARIADB, POSTGRES, TRINO, require
from tests.support.tpch_mesh import PRINCIPAL, answer_difference, to_addresses, to_table_names
from tests.support.trino_mesh import ENGINE, trino_tpch_mesh

pytestmark = pytest.mark.stores

# the local engine's tests' module fixtures: the same mesh, reference and queries
mesh = federated.mesh
reference = federated.reference
tpch_queries = federated.tpch_queries
generated_queries = federated.generated_queries


@pytest.fixture(scope="module", params=["sqlite", "postgres"], ids=["sqlite-local", "all-trino"])
def trino_gateway(request, mesh: Path, tmp_path_factory):
    require(TRINO)
    require(POSTGRES)
    require(MARIADB)
    target = tmp_path_factory.mktemp("trino-engine") / "mesh"
    with trino_tpch_mesh(mesh, target, mode="trino", reference=request.param) as routed:
        gateway = Gateway.open(routed)
        yield gateway
        gateway.close()


@pytest.mark.parametrize("number", range(1, 23), ids=lambda n: f"Q{n}")
def test_tpch_query_through_trino_gives_duckdbs_answer(
    number,
    tpch_queries,
    trino_gateway,
    reference,
):
    sql = to_addresses(tpch_queries[number])
    principal = trino_gateway.principals.get(PRINCIPAL)
    plan = trino_gateway.plan(sql, principal)
    config = trino_gateway.mesh.config.stores
    stores = {trino_gateway.mesh.products[a].store for a in plan.products}
    reached = {s for s in stores if config[s].trino is not None}
    if len(reached) < 2:  # one store's query goes to that store, as without an engine
        assert plan.engine == "local" and ENGINE not in {f.store for f in plan.fragments}
    else:
        assert plan.engine == ENGINE, plan.explain()
        assert any(f.store == ENGINE for f in plan.fragments), plan.explain()
        if reached == stores:
            assert plan.local_sql is None, f"the whole query should run on Trino:\n{plan.explain()}"
    answer = trino_gateway.execute(plan).read_all()
    expected = reference.execute(tpch_queries[number]).to_arrow_table()
    difference = answer_difference(answer, expected, ordered=True)
    assert difference is None, f"{difference}\n{plan.explain()}"


def test_generated_queries_through_trino_give_duckdbs_answers(
    generated_queries, trino_gateway, reference
):
    """The local engine's seeded differential queries (filters with other cases and trailing
    spaces of text, cross-store outer joins, GROUP BY, DISTINCT, UNION ALL, limited derived
    tables) give DuckDB's answers through Trino too. Those one store answers whole never reach
    Trino (tests/test_tpch_federated.py runs them); the others are all run here."""
    principal = trino_gateway.principals.get(PRINCIPAL)
    routed, differences = 0, []
    for query in generated_queries:
        plan = trino_gateway.plan(query.sql, principal)
        if plan.engine != ENGINE:
            continue
        routed += 1
        answer = trino_gateway.execute(plan).read_all()
        expected = reference.execute(to_table_names(query.sql)).to_arrow_table()
        difference = answer_difference(answer, expected, ordered=query.ordered)
        if difference is not None:
            differences.append(f"{difference}\nquery: {query.sql}\n{plan.explain()}")
    assert routed >= 20, f"only {routed} of the generated queries went to Trino"
    assert not differences, "\n\n".join(differences)
