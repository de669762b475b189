"""YAML read with line numbers, so a problem in a mesh file names the line to fix.

The policy files and ``principals.yaml`` are read through :func:`read_located_yaml`: each mapping
remembers its own line and the line of each key, and a key written twice in one mapping is a
YAML error rather than a silent overwrite.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


class Located(dict):
    """A YAML mapping that remembers the line of itself and of each of its keys."""

    line: int = 0
    key_lines: dict[Any, int]


class _Loader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> Located:
    loader.flatten_mapping(node)
    mapping = Located()
    mapping.line = node.start_mark.line + 1
    mapping.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in mapping:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} appears twice in one mapping", key_node.start_mark
            )
        mapping[key] = loader.construct_object(value_node, deep=True)
        mapping.key_lines[key] = key_node.start_mark.line + 1
    return mapping


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_located_yaml(path: Path, problems: list[str]) -> Any:
    """The YAML document at ``path`` with line numbers on its mappings; problems on failure."""
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)  # noqa: S506
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = getattr(error, "problem", None) or str(error)
        problems.append(f"{path}:{line}: not valid YAML ({problem}); fix it")
    except OSError as error:
        problems.append(f"{path}:1: cannot be read ({error.strerror})")
    return None


def line_of(raw: Any, key: Any = None) -> int:
    """The line of ``key`` in mapping ``raw`` (of ``raw`` itself without a key); 0 if unknown."""
    if isinstance(raw, Located):
        return raw.key_lines.get(key, raw.line) if key is not None else raw.line
    return 0
