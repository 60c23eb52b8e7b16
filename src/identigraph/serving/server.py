"""The HTTP server around the app: uvicorn, with a deadline on request lines and headers.

uvicorn times out idle keep-alive connections but not a connection that never finishes its headers (or
sends nothing at all): each one holds a socket and a file descriptor for as long as the client likes. The
protocol below arms a timer when a connection opens and when each request's first byte arrives, and
closes the connection with a 408 if the headers are not complete within ``http.header_timeout_s``. Bodies
are bounded by the admission middleware (``serving.guard``), which sees them.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from identigraph.serving.config import ServingConfig


class HeaderDeadlineProtocol(HttpToolsProtocol):
    """httptools' protocol with a deadline from a request's first byte (or the connection) to its headers."""

    header_timeout_s: float = 5.0  # set per process from the serving config (``configure``)
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_deadline()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm_header_deadline()

    def on_headers_complete(self) -> None:
        self._disarm_header_deadline()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_deadline()
        super().connection_lost(exc)

    def _arm_header_deadline(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)

    def _disarm_header_deadline(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.write(b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            self.transport.close()


def configure(serving: ServingConfig) -> None:
    """The header deadline is a class attribute of the protocol, set once per server process from its config."""
    HeaderDeadlineProtocol.header_timeout_s = serving.http.header_timeout_s


def uvicorn_options(serving: ServingConfig) -> dict[str, Any]:
    """What every uvicorn this project starts is given (``identigraph serve``, the demo, tests)."""
    configure(serving)
    return {"http": HeaderDeadlineProtocol, "timeout_keep_alive": serving.http.keep_alive_s,
            "log_config": None, "access_log": False}
