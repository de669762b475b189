"""A copy of the demo mesh with observability settings, and readers of what it reports."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml


def observed_mesh(demo_mesh: Path, target: Path, **observability) -> Path:
    """The demo mesh copied to ``target``, with ``observability`` as its settings."""
    shutil.copytree(demo_mesh, target, ignore=shutil.ignore_patterns("audit"))
    config = yaml.safe_load((target / "mesh.yaml").read_text())
    config.setdefault("gateway", {})["observability"] = observability
    (target / "mesh.yaml").write_text(yaml.safe_dump(config))
    return target


def samples(exposition: str) -> dict[tuple[str, tuple], float]:
    """Every sample of a Prometheus text exposition: (name, sorted labels) -> value."""
    from prometheus_client.parser import text_string_to_metric_families

    found = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: dict, name: str, **labels) -> float:
    """The sample ``name`` with exactly ``labels`` (0 when absent: a counter not moved yet)."""
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
