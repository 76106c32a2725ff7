"""The service for tests: the bundled default models in an app, and a real uvicorn on loopback."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager

import httpx


def default_app(**kwargs):
    """create_app around the models `waferscope serve` loads with no options."""
    from waferscope.cli.serve import resolve_models
    from waferscope.serve import create_app

    m = resolve_models(None, None, None, None, None, None)
    return create_app(m["classifier"], m["detector"], classifier_source=m["classifier_source"],
                      detector_source=m["detector_source"], classifier_run=m["classifier_run"],
                      detector_run=m["detector_run"], threshold=m["threshold"], explainer=m["explainer"],
                      explainer_source=m["explainer_source"], **kwargs)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_server(app, conn=None):
    """Real uvicorn serving ``app`` on a free loopback port, in a thread, configured as `waferscope
    serve` configures it (``conn``: a serve.server.ConnectionLimits); yields the base URL."""
    import uvicorn

    from waferscope.serve.server import uvicorn_config

    port = free_port()
    server = uvicorn.Server(uvicorn_config(app, "127.0.0.1", port, conn))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("the server did not come up within 20 s")
        time.sleep(0.05)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def wait_lot_done(client, sid: str, timeout: float = 60, poll: float = 0.2) -> dict:
    """Poll ``GET /v1/lots/SID`` until its background predictions are done (or ``timeout``); return the head."""
    deadline = time.monotonic() + timeout
    while True:
        head = client.get(f"/v1/lots/{sid}").json()
        if head["progress"]["done"] or time.monotonic() > deadline:
            return head
        time.sleep(poll)
