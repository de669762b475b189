"""SQL fuzzing through the real server: no statement ends in INTERNAL or takes the server down.

A quick seeded subset runs in the normal suite. The full campaign (about 10 minutes for 10,000
statements on 2 cores) runs when ``MESHGATE_FUZZ_STATEMENTS`` says how many statements to send,
or on its own as ``python -m tests.fuzz --statements 10000``.
"""

from __future__ import annotations

import os
import random

import pytest

from connectors import KINDS
from gateway.mesh import load_mesh
from tests.fuzz.generator import MUTATIONS, Generator, products_of, statements
from tests.fuzz.runner import _connect, known_answer, run_statements
from tests.support.server_process import served


def _campaign(demo_mesh, demo_reference, tmp_path, *, seed: int, count: int) -> None:
    mesh = load_mesh(demo_mesh, known_store_kinds=set(KINDS))
    expected = demo_reference.execute("SELECT count(*) FROM orders").fetchone()[0]
    with served(demo_mesh, log_dir=tmp_path) as server:
        report = run_statements(
            server.uri,
            statements(products_of(mesh), seed=seed, count=count),
            timeout_seconds=30,
            alive=server.alive,
        )
        assert report.statements == count, report.summary()
        assert not report.failures, report.summary()
        assert report.outcomes["ok"] > count // 10, report.summary()  # most reach the stores
        assert server.alive() and not server.fatal_errors(), server.output()[-3000:]
        with _connect(server.uri, "analyst", 30) as conn:
            assert known_answer(conn) == expected


def test_a_seeded_subset_ends_without_internal_errors_or_crashes(
    demo_mesh, demo_reference, tmp_path
):
    _campaign(demo_mesh, demo_reference, tmp_path, seed=7, count=200)


CAMPAIGN = int(os.environ.get("MESHGATE_FUZZ_STATEMENTS", "0"))


@pytest.mark.slow
@pytest.mark.timeout(max(300, CAMPAIGN // 5))
@pytest.mark.skipif(
    not CAMPAIGN, reason="the full campaign runs with MESHGATE_FUZZ_STATEMENTS=10000 (~10 min)"
)
def test_a_full_campaign_ends_without_internal_errors_or_crashes(
    demo_mesh, demo_reference, tmp_path
):
    _campaign(demo_mesh, demo_reference, tmp_path, seed=2026, count=CAMPAIGN)


def test_the_generator_is_seeded_and_covers_every_mutation(demo_mesh):
    mesh = load_mesh(demo_mesh, known_store_kinds=set(KINDS))
    products = products_of(mesh)
    first = [s.sql for s in statements(products, seed=3, count=200)]
    assert first == [s.sql for s in statements(products, seed=3, count=200)]
    assert first != [s.sql for s in statements(products, seed=4, count=200)]
    origins = {s.origin for s in statements(products, seed=3, count=2000)}
    assert set(MUTATIONS) | {"grammar", "parameters"} <= origins
    generator = Generator(products, random.Random(1))
    assert len(generator.functions) > 500  # every function sqlglot's DuckDB parser knows
