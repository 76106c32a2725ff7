"""`waferscope serve`: the HTTP service and its browser page (the app is waferscope.serve.create_app).

Which models it serves: one classifier and one detector, each the bundled default unless chosen.

- ``--classifier-run DIR`` / ``--classifier NAME`` pick the classifier (a run directory or a bundled
  name); ``--detector-run DIR`` / ``--detector NAME`` pick the detector.
- ``--run DIR`` (the issue's form) reads the run's model.json: a classifier run sets the classifier,
  a detector run the detector; the other stays the default.
- ``--bundled NAME`` picks the bundled model called NAME for each kind that has one (a name both
  kinds ship sets both); the per-kind options override it for their kind.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import List, Optional

import typer

from waferscope.errors import ConfigError, RunDirError


def register(app: typer.Typer) -> None:
    """Add ``waferscope serve`` to ``app``."""
    app.command("serve")(serve_cmd)


def resolve_models(run: Optional[Path], bundled: Optional[str], classifier_run: Optional[Path],
                   classifier: Optional[str], detector_run: Optional[Path], detector: Optional[str]) -> dict:
    """Load the classifier and detector the options name (see the module docstring)."""
    from waferscope.base import read_run_header
    from waferscope.cli.common import load_model_described
    from waferscope.models.classifiers import BUNDLED as CLF_BUNDLED, DEFAULT_FOR_EXPLANATIONS, DEFAULT_FOR_LABELS
    from waferscope.models.detectors import BUNDLED as DET_BUNDLED

    if run is not None and bundled is not None:
        raise ConfigError("give --run or --bundled, not both")
    if run is not None:
        kind = read_run_header(run).get("kind")
        if kind == "classifier":
            if classifier_run is not None or classifier is not None:
                raise ConfigError("--run holds a classifier: give --run or --classifier-run/--classifier, not both")
            classifier_run = run
        elif kind == "detector":
            if detector_run is not None or detector is not None:
                raise ConfigError("--run holds a detector: give --run or --detector-run/--detector, not both")
            detector_run = run
        else:
            raise RunDirError(f"this run holds a {kind}, not a classifier or detector", run)
    if bundled is not None:
        if bundled not in CLF_BUNDLED and bundled not in DET_BUNDLED:
            raise ConfigError(f"unknown bundled model {bundled!r}; classifiers: {', '.join(CLF_BUNDLED)}; "
                              f"detectors: {', '.join(DET_BUNDLED)}")
        if bundled in CLF_BUNDLED and classifier_run is None and classifier is None:
            classifier = bundled
        if bundled in DET_BUNDLED and detector_run is None and detector is None:
            detector = bundled
    # the descriptions name the model that was actually loaded ("bundled (cnn_fine)"), resolved by
    # the same function the CLI uses, so /health and the page never say "bundled None"
    clf, clf_dir, clf_source = load_model_described(classifier_run, classifier, "classifier", DEFAULT_FOR_LABELS)
    det, det_dir, det_source = load_model_described(detector_run, detector, "detector")
    for model in (clf, det):  # no progress bars per request on the server's stderr
        if "progress" in model.get_params():
            model.set_params(progress=False)
    # A bundled label model other than the explanation one gets its heat maps from cnn_gradcam, the
    # network trained so that its Grad-CAM sits on the pattern (a run of the user's own explains itself).
    explainer, explainer_source = None, ""
    if classifier_run is None and Path(clf_dir) != Path(CLF_BUNDLED[DEFAULT_FOR_EXPLANATIONS]):
        explainer, _, explainer_source = load_model_described(None, DEFAULT_FOR_EXPLANATIONS, "classifier")
    return {
        "classifier": clf, "classifier_run": clf_dir, "classifier_source": clf_source,
        "explainer": explainer, "explainer_source": explainer_source,
        "detector": det, "detector_run": det_dir, "detector_source": det_source,
        "threshold": det.threshold_,  # the detector's own decision threshold (None: scores only)
    }


def _check_port(host: str, port: int) -> None:
    """Fail with one line now rather than with uvicorn's log after the models are up."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ConfigError(f"cannot resolve --host {host!r} ({exc.strerror})") from None
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror})") from None


def serve_cmd(
    run: Optional[Path] = typer.Option(None, "--run", help="A classifier or detector run directory (its kind decides which it replaces)"),
    bundled: Optional[str] = typer.Option(None, "--bundled", help="Bundled model name, for each kind that ships one by that name"),
    classifier_run: Optional[Path] = typer.Option(None, "--classifier-run", help="Classifier run directory"),
    classifier: Optional[str] = typer.Option(None, "--classifier", help="Bundled classifier name (default: the `classify` default)"),
    detector_run: Optional[Path] = typer.Option(None, "--detector-run", help="Detector run directory (its learned threshold gives is_anomalous)"),
    detector: Optional[str] = typer.Option(None, "--detector", help="Bundled detector name (default: the `detect` default)"),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (no authentication: keep it on loopback or behind a proxy)"),
    port: int = typer.Option(8000, "--port", min=1, max=65535, help="TCP port"),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="Model threads per worker process (default: the cores divided among the workers)"),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, max=64, help="Server processes sharing the port (default: one per core, at most 4)"),
    max_maps: int = typer.Option(1024, "--max-maps", min=1, help="Maps per request"),
    max_side: int = typer.Option(512, "--max-side", min=1, help="Rows or columns of one map"),
    max_body_bytes: int = typer.Option(32 * 1024 * 1024, "--max-body-bytes", min=1024, metavar="BYTES", help="Request body bytes (JSON or upload)"),
    max_heatmap_maps: int = typer.Option(256, "--max-heatmap-maps", min=1, help="Maps per request with ?heatmap=1"),
    max_dies: int = typer.Option(16 * 1024 * 1024, "--max-dies", min=1, help="Dies summed over one request's maps"),
    max_echo_dies: int = typer.Option(4 * 1024 * 1024, "--max-echo-dies", min=1, help="Grid cells one answer may echo (?maps=1, ?heatmap=1)"),
    # --max-inflated-bytes: the help's option column (80 columns) cuts a longer name; the former
    # --max-decompressed-bytes stays accepted (hidden) for existing scripts
    max_decompressed_bytes: int = typer.Option(64 * 1024 * 1024, "--max-inflated-bytes", min=1024, metavar="BYTES", help="Bytes an uploaded file may inflate to (decompressed)"),
    max_decompressed_old: Optional[int] = typer.Option(None, "--max-decompressed-bytes", min=1024, hidden=True),
    request_timeout: float = typer.Option(60.0, "--request-timeout", min=0.1, metavar="SECONDS", help="Seconds a request may take before it is answered 503"),
    max_queued_dies: int = typer.Option(64 * 1024 * 1024, "--max-queued-dies", min=1, help="Dies waiting per model before new requests get 503 + Retry-After"),
    max_inflight: int = typer.Option(128, "--max-inflight", min=1, help="POST requests in flight before 503 + Retry-After"),
    read_timeout: float = typer.Option(10.0, "--read-timeout", min=0.1, metavar="SECONDS", help="Seconds a request may take to arrive (headers and body)"),
    keep_alive: float = typer.Option(5.0, "--keep-alive", min=0.1, metavar="SECONDS", help="Seconds an idle keep-alive connection stays open"),
    max_header_bytes: int = typer.Option(16 * 1024, "--max-header-bytes", min=1024, metavar="BYTES", help="Request line + headers"),
    max_connections: int = typer.Option(256, "--max-connections", min=1, help="Open connections + running requests"),
    allow_origin: List[str] = typer.Option([], "--allow-origin", help="A browser origin besides the service's own that may POST (repeatable)"),
    access_log: bool = typer.Option(False, "--access-log", help="Log every request (off: it costs throughput)"),
    index: Optional[Path] = typer.Option(None, "--index", help="A similarity index (`waferscope index build`) "
                                         "served by POST /v1/search"),
) -> None:
    """Serve the classifier and detector over HTTP (JSON API + browser page at /); docs/serve.md."""
    import os

    import uvicorn

    from waferscope.serve import Limits, create_app
    from waferscope.serve.memory import configure
    from waferscope.serve.server import ConnectionLimits, uvicorn_config

    _check_port(host, port)
    configure()  # before the worker threads exist: malloc arenas capped, large blocks returned on free
    models = resolve_models(run, bundled, classifier_run, classifier, detector_run, detector)
    wafer_index = None
    if index is not None:
        from waferscope.search import WaferIndex

        wafer_index = WaferIndex.load(index)  # a bad or foreign index stops here with one line
    from waferscope.search.discover import has_open_set, load_open_set

    # a classifier run trained with --open-set brings its scorer: /v1/classify?abstain=1 uses it
    open_set = (load_open_set(models["classifier_run"], models["classifier"].classes_)
                if has_open_set(models["classifier_run"]) else None)
    limits = Limits(max_maps=max_maps, max_side=max_side, max_body_bytes=max_body_bytes,
                    max_heatmap_maps=max_heatmap_maps, max_dies=max_dies, max_echo_dies=max_echo_dies,
                    max_decompressed_bytes=max_decompressed_old or max_decompressed_bytes, request_timeout=request_timeout,
                    max_queued_dies=max_queued_dies, max_inflight=max_inflight)
    from waferscope.serve.workers import default_workers

    n_workers = workers or default_workers()
    if n_workers > 1 and not hasattr(os, "fork"):
        raise ConfigError("--workers above 1 needs fork(), which this platform lacks; use --workers 1")
    cores = max(1, os.cpu_count() or 1)
    # every core, divided among the workers: one process on 2 threads beat 1 thread on 2 cores
    # (bench_serve --suite, idle, 2026-12-06: 1-map 1,586-1,750 vs 1,397-1,633 wafers/s, 64-map
    # 3,437 vs 2,499-2,540); with N workers each runs its models on cores / N threads
    threads = threads or max(1, cores // n_workers)
    if n_workers > 1:
        for model in (models["classifier"], models["detector"], models["explainer"]):
            if model is not None and "n_jobs" in model.get_params():  # feature and tree-walk threads
                model.set_params(n_jobs=threads)

    def make_app(processes=None, lot_socket=None):
        return create_app(models["classifier"], models["detector"], classifier_source=models["classifier_source"],
                          detector_source=models["detector_source"], classifier_run=models["classifier_run"],
                          detector_run=models["detector_run"], threshold=models["threshold"], limits=limits,
                          threads=threads, allowed_origins=tuple(allow_origin),
                          index=wafer_index, index_source=str(index) if index is not None else "",
                          explainer=models["explainer"], explainer_source=models["explainer_source"],
                          open_set=open_set, processes=processes, lot_socket=lot_socket)

    typer.echo(f"waferscope serve: classifier {models['classifier'].registry_name} ({models['classifier_source']}), "
               f"detector {models['detector'].registry_name} ({models['detector_source']}); "
               f"{n_workers} worker process(es), {threads} model thread(s) each; http://{host}:{port}/", err=True)
    conn = ConnectionLimits(read_timeout=read_timeout, keep_alive=keep_alive, max_header_bytes=max_header_bytes,
                            max_connections=max_connections)
    # The ~270,000 objects of the loaded libraries and models never die: frozen, the collector's rare
    # full passes skip them (one pass over them takes a few hundred ms and stalls every request in
    # flight), and forked workers share their pages instead of copying them when it would touch them
    import gc

    gc.collect()
    gc.freeze()
    if n_workers == 1:  # one process, one event loop: the models' worker threads batch the requests
        uvicorn.Server(uvicorn_config(make_app(), host, port, conn, access_log=access_log)).run()
        return
    from waferscope.serve.workers import serve_workers

    # several processes on one port (waferscope/serve/workers.py): the models loaded once here, each
    # worker forked with them builds its own app, batch threads and event loop
    def run_app(app, sockets):
        uvicorn.Server(uvicorn_config(app, host, port, conn, access_log=access_log)).run(sockets=sockets)

    status = serve_workers(lambda k, table, lot_socket: make_app(table, lot_socket), run_app, host, port, n_workers)
    if status:
        raise typer.Exit(status)
