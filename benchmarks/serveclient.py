"""The honest client of the service benchmarks (bench_serve.py, bench_soak.py): one keep-alive HTTP/1.1
connection on raw asyncio streams, one request at a time, every non-200 answer or transport error
counted and the connection re-opened after a transport error.

A minimal client rather than httpx: httpx's pure-Python client spends ~4 ms of CPU per request, as much
as the server, and on a 2-core machine the benchmark would measure mostly itself.
"""

from __future__ import annotations

import asyncio
import time

STREAM_LIMIT = 2**26  # bytes one answer may hold (a 1,024-map ?maps=1 answer is tens of MB)


def request_bytes(host: str, path: str, body: bytes) -> bytes:
    """A POST of a JSON body, pre-encoded once so that the client spends its CPU on HTTP only."""
    return (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


async def roundtrip(reader, writer, raw: bytes) -> tuple[int, bytes]:
    """One request on a keep-alive connection: (status, body). The server always sends Content-Length."""
    writer.write(raw)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = next(int(v) for k, _, v in (h.partition(":") for h in lines[1:]) if k.lower() == "content-length")
    return status, await reader.readexactly(length)


class HonestClient:
    """``await client.send(raw)`` → (ok, latency s); ``latencies`` and ``errors`` accumulate (shared
    lists may be passed so that many clients report together)."""

    def __init__(self, host: str, port: int, latencies: list | None = None, errors: list | None = None):
        self.host, self.port = host, port
        self.latencies = [] if latencies is None else latencies
        self.errors = [] if errors is None else errors
        self.reader = self.writer = None

    async def __aenter__(self) -> "HonestClient":
        await self._connect()
        return self

    async def __aexit__(self, *exc) -> None:
        if self.writer is not None:
            self.writer.close()

    async def _connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port, limit=STREAM_LIMIT)

    async def send(self, raw: bytes) -> tuple[bool, float]:
        t0 = time.perf_counter()
        ok = False
        try:
            status, body = await roundtrip(self.reader, self.writer, raw)
            ok = status == 200
            if not ok:
                self.errors.append(f"{status} {body[:200]!r}")
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, StopIteration) as exc:
            self.errors.append(repr(exc))
            self.writer.close()
            await self._connect()
        took = time.perf_counter() - t0
        self.latencies.append(took)
        return ok, took
