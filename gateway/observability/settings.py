"""The ``gateway.observability`` section of mesh.yaml: what the gateway reports, and where.

Metrics are on by default (they cost a few counter updates per query); tracing and lineage are
off until an exporter or a transport is configured::

    gateway:
      observability:
        metrics: true                       # GET /metrics on the HTTP port
        metrics_principal_labels: false     # true adds a `principal` label (one series per user)
        tracing: {otlp_endpoint: "http://127.0.0.1:4318/v1/traces"}
        lineage: {transport: file, path: lineage/events.jsonl}
        log_format: json                    # JSON lines with query id, principal, trace id
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class TracingSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    otlp_endpoint: str | None = None
    """OTLP/HTTP traces endpoint (``http://collector:4318/v1/traces``); tracing is off without
    one (unless ``console`` is set)."""
    console: bool = False
    """Write finished spans to the gateway's log instead (for debugging)."""
    service_name: str = "meshgate"
    sample_ratio: float = Field(default=1.0, ge=0.0, le=1.0)
    """The share of queries traced (a client's sampled trace is always continued)."""
    include_sql: bool = True
    """Put the client's statement and the SQL sent to each store on the spans (mask key hidden)."""
    timeout_seconds: float = Field(default=10.0, gt=0)
    """How long one OTLP export may take, retries included (spans wait in the queue meanwhile)."""
    batch_seconds: float = Field(default=1.0, ge=0)
    """How long a finished query's spans may wait for others' to be exported with them."""
    batch_size: int = Field(default=100, ge=1)
    """The most queries whose spans go in one export."""
    queue_size: int = Field(default=2_000, ge=1)
    """Finished queries whose spans wait for export; past this, new ones are dropped and
    counted, never waited on."""

    @property
    def enabled(self) -> bool:
        return self.otlp_endpoint is not None or self.console


class LineageSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    transport: Literal["off", "file", "http", "console"] = "off"
    path: str | None = None
    """``file``: the JSON-lines file events are appended to (relative to the mesh)."""
    url: str | None = None
    """``http``: the OpenLineage backend, e.g. ``http://marquez:5000``."""
    endpoint: str = "api/v1/lineage"
    timeout_seconds: float = Field(default=5.0, gt=0)
    """``http``: how long one POST may take (events wait in the queue meanwhile)."""
    api_key_env: str | None = None
    """``http``: the environment variable holding the backend's API key, if it needs one."""
    namespace: str | None = None
    """The namespace of the query jobs and of the products as datasets (default
    ``meshgate://<mesh name>``)."""
    include_principal: bool = False
    """Name the principal in each run's ``meshgate`` facet (off: only its roles)."""
    queue_size: int = Field(default=10_000, ge=1)
    """Events waiting to be sent; past this, new ones are dropped and counted, never waited on."""
    batch_seconds: float = Field(default=1.0, ge=0)
    """How long a queued event may wait for others to be sent with it: events go out in
    batches, between queries rather than during them."""
    batch_size: int = Field(default=200, ge=1)
    """The most events sent in one batch."""

    @model_validator(mode="after")
    def _transport_has_target(self) -> LineageSettings:
        if self.transport == "file" and not self.path:
            raise ValueError("lineage transport `file` needs `path:` (a JSON-lines file)")
        if self.transport == "http" and not self.url:
            raise ValueError("lineage transport `http` needs `url:` (the OpenLineage backend)")
        return self


class ObservabilitySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    metrics: bool = True
    metrics_require_auth: bool = False
    """Ask ``GET /metrics`` for credentials (off: open, as Prometheus scrapes by default)."""
    metrics_principal_labels: bool = False
    """Label query metrics with the principal's name: one series per principal, so only for
    meshes with a bounded set of principals."""
    tracing: TracingSettings = Field(default_factory=TracingSettings)
    lineage: LineageSettings = Field(default_factory=LineageSettings)
    log_format: Literal["text", "json"] = "text"
