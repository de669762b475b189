"""Warnings for the client on a Flight call's response headers (``x-meshgate-warning``).

Handlers add a notice to the call's middleware (``context.get_middleware(NOTICES_KEY)``); the
middleware sends each as one value of the header when the call's headers go out. The first use is
deprecation: a read of a deprecated product version still works but says so.
"""

from __future__ import annotations

import pyarrow.flight as flight

from gateway.lifecycle import WARNING_HEADER

NOTICES_KEY = "notices"


class NoticeMiddleware(flight.ServerMiddleware):
    def __init__(self) -> None:
        self.notices: list[str] = []

    def add(self, notices: list[str]) -> None:
        for notice in notices:
            ascii_only = notice.encode("ascii", "replace").decode().replace("\n", " ")
            if ascii_only not in self.notices:
                self.notices.append(ascii_only)

    def sending_headers(self):
        return {WARNING_HEADER: list(self.notices)} if self.notices else {}


class NoticeMiddlewareFactory(flight.ServerMiddlewareFactory):
    def start_call(self, info, headers):
        return NoticeMiddleware()


def add_notices(context, notices: list[str]) -> None:
    """Send ``notices`` with the response of the call ``context`` belongs to."""
    if not notices:
        return
    middleware = context.get_middleware(NOTICES_KEY)
    if middleware is not None:
        middleware.add(notices)
