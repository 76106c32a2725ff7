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
from typing import Optional

import typer

from waferscope.errors import ConfigError, RunDirError


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_cmd)


def resolve_models(run: Optional[Path], bundled: Optional[str], classifier_run: Optional[Path],
                   classifier: Optional[str], detector_run: Optional[Path], detector: Optional[str]) -> dict:
    """Load the classifier and detector the options name (see the module docstring)."""
    from waferscope.base import read_run_header
    from waferscope.cli.common import load_model
    from waferscope.cli.detect import read_threshold
    from waferscope.models.classifiers import BUNDLED as CLF_BUNDLED, DEFAULT_FOR_LABELS
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
    clf, clf_dir = load_model(classifier_run, classifier, "classifier", DEFAULT_FOR_LABELS)
    det, det_dir = load_model(detector_run, detector, "detector")  # load_model's default detector
    thr = read_threshold(det_dir)
    return {
        "classifier": clf, "classifier_run": clf_dir,
        "classifier_source": str(classifier_run) if classifier_run else f"bundled {classifier or DEFAULT_FOR_LABELS}",
        "detector": det, "detector_run": det_dir,
        "detector_source": str(detector_run) if detector_run else f"bundled {detector or _default_detector()}",
        "threshold": None if thr is None else float(thr["threshold"]),
    }


def _default_detector() -> str:
    """The bundled detector load_model picks by default (read from it, so a rename stays in one place)."""
    import inspect

    from waferscope.cli.common import load_model

    return str(inspect.signature(load_model).parameters["default"].default)


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
    detector_run: Optional[Path] = typer.Option(None, "--detector-run", help="Detector run directory (its threshold.json gives is_anomalous)"),
    detector: Optional[str] = typer.Option(None, "--detector", help="Bundled detector name (default: the `detect` default)"),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (no authentication: keep it on loopback or behind a proxy)"),
    port: int = typer.Option(8000, "--port", min=1, max=65535, help="TCP port"),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="torch intra-op threads (default: cores - 1, at least 1)"),
    max_maps: int = typer.Option(1024, "--max-maps", min=1, help="Maps per request"),
    max_side: int = typer.Option(512, "--max-side", min=1, help="Rows or columns of one map"),
    max_body_bytes: int = typer.Option(32 * 1024 * 1024, "--max-body-bytes", min=1024, help="Request body bytes (JSON or upload)"),
    max_heatmap_maps: int = typer.Option(256, "--max-heatmap-maps", min=1, help="Maps per request with ?heatmap=1"),
    access_log: bool = typer.Option(False, "--access-log", help="Log every request (off: it costs throughput)"),
) -> None:
    """Serve the classifier and detector over HTTP (JSON API + browser page at /); docs/serve.md."""
    import os

    import uvicorn

    from waferscope.serve import Limits, create_app

    _check_port(host, port)
    models = resolve_models(run, bundled, classifier_run, classifier, detector_run, detector)
    limits = Limits(max_maps=max_maps, max_side=max_side, max_body_bytes=max_body_bytes,
                    max_heatmap_maps=max_heatmap_maps)
    app = create_app(models["classifier"], models["detector"], classifier_source=models["classifier_source"],
                     detector_source=models["detector_source"], classifier_run=models["classifier_run"],
                     detector_run=models["detector_run"], threshold=models["threshold"], limits=limits,
                     # leave a core to the event loop: under many small requests HTTP and JSON work is
                     # as large as the model's (1 thread: 617 requests/s on 2 cores, 2 threads: 513)
                     threads=threads or max(1, (os.cpu_count() or 1) - 1))
    typer.echo(f"waferscope serve: classifier {models['classifier'].registry_name} ({models['classifier_source']}), "
               f"detector {models['detector'].registry_name} ({models['detector_source']}); "
               f"http://{host}:{port}/", err=True)
    # one process, one event loop: the models live in this process and their worker threads batch
    # the requests; more uvicorn workers would load a copy of every model per worker
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=access_log)
