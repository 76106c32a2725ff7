"""The `waferscope` command: a thin layer over the library API.

Each command group lives in its own module (``cli/data.py``, ``cli/classify.py``, ...). Errors the
user can fix (:class:`~waferscope.errors.WaferscopeError`) print as one line and exit with code 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys

import typer

from waferscope.cli import benchmark, classify, data, detect, evaluate, explain, export, models, serve
from waferscope.errors import WaferscopeError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Wafer-map defect analysis: classify, detect anomalies, explain, benchmark.")
app.add_typer(data.app, name="data")
app.add_typer(classify.app, name="classify")
app.add_typer(detect.app, name="detect")
evaluate.register_all()
app.add_typer(evaluate.app, name="evaluate")
explain.register(app)  # `explain` and `atlas` are top-level commands
benchmark.register(app)  # `benchmark`
export.register(app)  # `export`
models.register(app)  # `models`
serve.register(app)  # `serve` (HTTP service + browser page)
__import__("waferscope.cli.lots", fromlist=["register"]).register(app)  # `lots` (lot summary, stacked maps, zones, trend)
__import__("waferscope.cli.search", fromlist=["register"]).register(app)  # `index build`, `search` (similar wafers)


def main() -> None:
    try:
        app(standalone_mode=False)
    except WaferscopeError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(2)
    except (typer.Exit, SystemExit) as exc:
        code = getattr(exc, "exit_code", getattr(exc, "code", 0))
        sys.exit(code)
    except Exception as exc:  # usage errors (unknown option, extra argument) arrive here in non-standalone mode
        if isinstance(exc, _usage_error_types()):
            exc.show()
            sys.exit(exc.exit_code)
        if isinstance(exc, typer.Abort):
            sys.exit(130)
        raise


def _usage_error_types() -> tuple[type, ...]:
    """The ClickException classes a usage error can be: typer >= 0.2x raises those of its vendored
    copy of click (``typer._click``), older typer those of click itself."""
    import importlib

    types = []
    for module in ("typer._click.exceptions", "click.exceptions"):
        try:
            types.append(importlib.import_module(module).ClickException)
        except ImportError:
            pass
    return tuple(types)


if __name__ == "__main__":
    main()
