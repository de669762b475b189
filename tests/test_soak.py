"""A short soak of the gateway process (benchmarks/soak.py): no errors, no growth.

The full run is ``python -m benchmarks soak`` (32 clients, 5 minutes); this one runs 8 clients
for ``MESHGATE_SOAK_SECONDS`` (default 15) so the suite stays quick on a shared machine.
"""

from __future__ import annotations

import os

import pytest

from benchmarks.soak import soak


@pytest.mark.slow
def test_a_short_soak_has_no_errors_and_no_growth(tmp_path):
    seconds = float(os.environ.get("MESHGATE_SOAK_SECONDS", "15"))
    result = soak(clients=8, seconds=seconds, scale_factor=0.01, log=tmp_path / "gateway.log")
    log = (tmp_path / "gateway.log").read_text()
    assert "Fatal Python error" not in log and "Segmentation fault" not in log, log[-3000:]
    assert result["errors"] == 0, result["first_errors"]
    assert set(result["queries"]) == {"point", "scan", "join", "disconnect"}, result["queries"]
    assert result["passed"], {k: v for k, v in result.items() if k != "samples"}
