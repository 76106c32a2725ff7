"""Running the app under uvicorn with connection hygiene: how ``waferscope serve`` (and the tests) start it.

uvicorn on its own never closes a connection that has not finished sending its request: 200 idle
sockets or 50 half-sent headers stay open for good, and llhttp accepts headers of any size. The
protocol below adds, per connection:

- a read deadline: a request must arrive completely (request line, headers and body) within
  ``read_timeout`` seconds of its first byte, and a new connection must start one within that time;
  otherwise the connection is answered 408 (if nothing was answered yet) and closed;
- a header budget: more than ``max_header_bytes`` of request line + headers is answered 431 and
  the connection closed.

- a connection cap: beyond ``max_connections`` open connections a new one is answered 503 (JSON)
  and closed.

Keep-alive connections idle after a response are closed by uvicorn's ``timeout_keep_alive``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


@dataclass(frozen=True)
class ConnectionLimits:
    """Limits on connections the HTTP server enforces (timeouts, sizes, counts)."""

    read_timeout: float = 10.0  # s from a request's first byte (or the connection's start) to its end
    keep_alive: float = 5.0  # s an idle keep-alive connection stays open
    max_header_bytes: int = 16 * 1024  # request line + headers
    max_connections: int = 256  # open connections; a new one beyond is answered 503 and closed


def _raw_response(status: int, reason: str, message: str) -> bytes:
    body = json.dumps({"error": message}).encode()
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            "connection: close\r\n\r\n").encode() + body


class GuardedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol with a read timeout, a header size cap and a connection cap.

    :func:`guarded_protocol` makes a subclass bound to one :class:`ConnectionLimits`.
    """

    _ws_limits = ConnectionLimits()

    def connection_made(self, transport) -> None:
        """Refuse the connection over ``max_connections``; otherwise start its read timer."""
        super().connection_made(transport)
        self._ws_header_bytes = 0
        self._ws_headers_done = False
        self._ws_timer = None
        if len(self.connections) > self._ws_limits.max_connections:  # answered here so that it is JSON too
            transport.write(_raw_response(503, "Service Unavailable", "too many open connections "
                                          f"(the limit is {self._ws_limits.max_connections}); retry shortly"))
            transport.close()
            return
        self._ws_timer = self.loop.call_later(self._ws_limits.read_timeout, self._ws_expire)

    def _ws_arm(self) -> None:
        if getattr(self, "_ws_timer", None) is None:
            self._ws_timer = self.loop.call_later(self._ws_limits.read_timeout, self._ws_expire)

    def _ws_disarm(self) -> None:
        timer = getattr(self, "_ws_timer", None)
        if timer is not None:
            timer.cancel()
            self._ws_timer = None

    def _ws_expire(self) -> None:
        self._ws_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is None or not self.cycle.response_started:
            self.transport.write(_raw_response(408, "Request Timeout", "the request did not arrive within "
                                               f"{self._ws_limits.read_timeout:g} s (limit read_timeout)"))
        self.transport.close()

    def connection_lost(self, exc) -> None:
        """Stop the read timer."""
        self._ws_disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """Count the bytes of incomplete headers and answer 431 once they exceed ``max_header_bytes``."""
        # httptools buffers a header until it is complete, so its callbacks cannot see a 1 MB
        # header growing: count the raw bytes received while a request's headers are incomplete
        if not self._ws_headers_done:
            self._ws_header_bytes += len(data)
        super().data_received(data)
        if (not self._ws_headers_done and self._ws_header_bytes > self._ws_limits.max_header_bytes
                and not self.transport.is_closing()):
            self.transport.write(_raw_response(431, "Request Header Fields Too Large", "request line and headers "
                                               f"exceed {self._ws_limits.max_header_bytes} bytes"))
            self.transport.close()

    def on_headers_complete(self) -> None:
        """Stop counting header bytes."""
        self._ws_headers_done = True
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        """Stop the read timer and count the next request's headers afresh."""
        self._ws_disarm()
        self._ws_headers_done, self._ws_header_bytes = False, 0  # the next request's headers come next
        super().on_message_complete()


def guarded_protocol(limits: ConnectionLimits) -> type:
    """Return an HttpToolsProtocol subclass enforcing ``limits.read_timeout`` and ``limits.max_header_bytes``."""
    return type("GuardedHttpTools", (GuardedHttpTools,), {"_ws_limits": limits})


def uvicorn_config(app, host: str, port: int, limits: ConnectionLimits | None = None, *, access_log: bool = False,
                   log_level: str = "warning"):
    """Return the uvicorn config that serves ``app`` with ``limits``."""
    import uvicorn

    limits = limits or ConnectionLimits()
    return uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=access_log,
                          http=guarded_protocol(limits), timeout_keep_alive=limits.keep_alive,
                          # uvicorn's own cap (a plain-text 503) only as a backstop behind the protocol's JSON one
                          limit_concurrency=2 * limits.max_connections + 64,
                          h11_max_incomplete_event_size=limits.max_header_bytes,
                          timeout_graceful_shutdown=5)
