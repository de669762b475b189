"""What the gateway tells its operators, owners and governance group about every query.

- ``metrics``: Prometheus counters, gauges and histograms, scraped at ``GET /metrics``;
- ``tracing``: an OpenTelemetry trace per query, a span per step, continuing a client's trace;
- ``lineage``: an OpenLineage START and COMPLETE/FAIL run event per query;
- ``logs``: JSON-lines logging with the query id, principal and trace id.

``core.Observability`` ties them to the query path: the gateway opens one ``QueryObservation``
per query and closes it once, when the query is audited. A part that is off costs nothing on the
path; the package imports its libraries only when a part is on.
"""
