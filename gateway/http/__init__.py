"""The HTTP port: discovery pages and API for people and tools, beside the Flight SQL data port.

:func:`gateway.http.app.create_app` builds the Starlette app;
:class:`gateway.http.server.HttpServer` runs it in a thread next to the Flight server
(``meshgate serve --http-port``).
"""
