"""Validating OpenLineage events against JSON Schema.

No package reachable here ships the OpenLineage spec's JSON schemas (openlineage-python 1.54
carries only classes generated from them), and nothing is downloaded at run time. So
:data:`RUN_EVENT` is a JSON Schema written for these tests from the spec (OpenLineage 2-0-2
``RunEvent``, the base facet, and the schema and column-lineage facets): the required fields,
their formats and the shape of every facet meshgate emits. When ``MESHGATE_OPENLINEAGE_SPEC``
names a directory holding the official ``OpenLineage.json`` and ``facets/*.json``, the events are
also validated against those, each facet against the schema its ``_schemaURL`` names.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import jsonschema

_FACET = {
    "type": "object",
    "required": ["_producer", "_schemaURL"],
    "properties": {
        "_producer": {"type": "string", "format": "uri"},
        "_schemaURL": {"type": "string", "format": "uri"},
    },
}
_FACETS = {"type": "object", "additionalProperties": {"$ref": "#/$defs/facet"}}
_DATASET = {
    "type": "object",
    "required": ["namespace", "name"],
    "properties": {
        "namespace": {"type": "string", "minLength": 1},
        "name": {"type": "string", "minLength": 1},
        "facets": {
            "allOf": [_FACETS],
            "properties": {
                "schema": {"$ref": "#/$defs/schema"},
                "columnLineage": {"$ref": "#/$defs/columnLineage"},
            },
        },
    },
}
_INPUT_FIELD = {
    "type": "object",
    "required": ["namespace", "name", "field"],
    "properties": {
        "namespace": {"type": "string"},
        "name": {"type": "string"},
        "field": {"type": "string"},
        "transformations": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["type"],
                "properties": {
                    "type": {"enum": ["DIRECT", "INDIRECT"]},
                    "subtype": {"type": "string"},
                    "description": {"type": "string"},
                    "masking": {"type": "boolean"},
                },
                "additionalProperties": False,
            },
        },
    },
    "additionalProperties": False,
}

RUN_EVENT = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["eventTime", "producer", "schemaURL", "run", "job"],
    "properties": {
        "eventTime": {"type": "string", "format": "date-time"},
        "producer": {"type": "string", "format": "uri"},
        "schemaURL": {"type": "string", "format": "uri"},
        "eventType": {"enum": ["START", "RUNNING", "COMPLETE", "ABORT", "FAIL", "OTHER"]},
        "run": {
            "type": "object",
            "required": ["runId"],
            "properties": {"runId": {"type": "string", "format": "uuid"}, "facets": _FACETS},
        },
        "job": {
            "type": "object",
            "required": ["namespace", "name"],
            "properties": {
                "namespace": {"type": "string"},
                "name": {"type": "string"},
                "facets": _FACETS,
            },
        },
        "inputs": {
            "type": "array",
            "items": {"allOf": [_DATASET], "properties": {"inputFacets": _FACETS}},
        },
        "outputs": {
            "type": "array",
            "items": {"allOf": [_DATASET], "properties": {"outputFacets": _FACETS}},
        },
    },
    "$defs": {
        "facet": _FACET,
        "schema": {
            "allOf": [{"$ref": "#/$defs/facet"}],
            "properties": {
                "fields": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name"],
                        "properties": {
                            "name": {"type": "string"},
                            "type": {"type": "string"},
                            "description": {"type": "string"},
                        },
                    },
                }
            },
        },
        "columnLineage": {
            "allOf": [{"$ref": "#/$defs/facet"}],
            "required": ["fields"],
            "properties": {
                "fields": {
                    "type": "object",
                    "additionalProperties": {
                        "type": "object",
                        "required": ["inputFields"],
                        "properties": {
                            "inputFields": {"type": "array", "items": _INPUT_FIELD},
                            "transformationDescription": {"type": "string"},
                            "transformationType": {"enum": ["IDENTITY", "MASKED"]},
                        },
                        "additionalProperties": False,
                    },
                },
                "dataset": {"type": "array", "items": _INPUT_FIELD},
            },
        },
    },
}


def validate(event: dict) -> None:
    """Raise jsonschema.ValidationError unless ``event`` is a valid OpenLineage RunEvent."""
    checker = jsonschema.Draft202012Validator.FORMAT_CHECKER
    jsonschema.Draft202012Validator(RUN_EVENT, format_checker=checker).validate(event)
    spec = os.environ.get("MESHGATE_OPENLINEAGE_SPEC")
    if spec:
        validate_official(event, Path(spec))


def validate_official(event: dict, spec: Path) -> None:
    """Validate against the official spec files in ``spec`` (OpenLineage.json, facets/)."""
    from referencing import Registry, Resource

    documents = [spec / "OpenLineage.json", *sorted((spec / "facets").glob("*.json"))]
    loaded = {path.name: json.loads(path.read_text()) for path in documents}
    registry = Registry().with_resources(
        (document["$id"], Resource.from_contents(document)) for document in loaded.values()
    )
    core = loaded["OpenLineage.json"]
    run_event = {"$ref": f"{core['$id']}#/$defs/RunEvent"}
    jsonschema.Draft202012Validator(run_event, registry=registry).validate(event)
    for facet in _facets(event):
        url = facet["_schemaURL"]
        name = url.split("#")[0].rsplit("/", 1)[-1]
        if name not in loaded:  # meshgate's own facet
            continue
        document = loaded[name]
        fragment = url.split("#", 1)[1] if "#" in url else ""
        schema = {"$ref": f"{document['$id']}#{fragment}"}
        jsonschema.Draft202012Validator(schema, registry=registry).validate(facet)


def _facets(event: dict):
    yield from (event["run"].get("facets") or {}).values()
    yield from (event["job"].get("facets") or {}).values()
    for dataset in [*(event.get("inputs") or []), *(event.get("outputs") or [])]:
        for key in ("facets", "inputFacets", "outputFacets"):
            yield from (dataset.get(key) or {}).values()
