"""The `waferscope` command: a thin layer over the library API.

Each command group lives in its own module (``cli/data.py``, ``cli/classify.py``, ...). Errors the
user can fix (:class:`~waferscope.errors.WaferscopeError`) print as one line and exit with code 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
import warnings

import typer

from waferscope.cli import benchmark, classify, data, detect, discover, evaluate, explain, export, lots, models, search, serve
from waferscope.errors import AdviceWarning, WaferscopeError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Wafer-map defect analysis: classify, detect anomalies, explain, benchmark.")


def _version(value: bool) -> None:
    if value:
        from waferscope import __version__

        typer.echo(f"waferscope {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", is_eager=True, callback=_version,
                                       help="Print the version and exit.")) -> None:
    """Wafer-map defect analysis: classify, detect anomalies, explain, benchmark."""


# The order `--help` lists the commands in: a user's workflow, not the order they are registered in.
WORKFLOW = ["data", "classify", "detect", "explain", "atlas", "lots", "index", "search", "discover", "evaluate", "benchmark", "export", "serve", "models"]
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
lots.register(app)  # `lots` (lot summary, stacked maps, zones, trend)
search.register(app)  # `index build`, `search` (similar wafers)
discover.register(app)  # `discover` (clusters of wafers no known class fits)


def _plain_metavars(command) -> None:
    """Help placeholders a user can read.

    Typer shows the Python type (``<list[str]>``, ``<bool>`` for a flag); this names each value after
    its option (``--data DATA``) and shows nothing for flags. Also orders the sub-commands by
    :data:`WORKFLOW`.
    """
    for param in getattr(command, "params", []):
        if getattr(param, "is_flag", False):
            param.metavar = ""
        elif getattr(param, "param_type_name", "") == "argument":
            param.metavar = param.metavar or param.name.upper()
            param.display_type_rich = lambda ctx: None  # the name (SPEC) already says it; no <str> beside it
        elif param.metavar is None and getattr(param, "opts", None):
            param.metavar = param.name.rstrip("_").upper()
    make_help = command.get_help_option  # --help is made when help is asked for, not in .params

    def get_help_option(ctx, make_help=make_help):
        option = make_help(ctx)
        if option is not None:
            option.metavar = ""
        return option

    command.get_help_option = get_help_option
    commands = getattr(command, "commands", None)
    if commands:
        order = {name: i for i, name in enumerate(WORKFLOW)}
        ordered = sorted(commands, key=lambda name: (order.get(name, len(order)), list(commands).index(name)))
        command.commands = {name: commands[name] for name in ordered}
        for sub in command.commands.values():
            _plain_metavars(sub)


def build_command():
    """Return the click command behind ``app`` with readable help (see :func:`_plain_metavars`)."""
    command = typer.main.get_command(app)
    _plain_metavars(command)
    return command


_SHOWWARNING = warnings.showwarning


def _show_note(message, category, filename, lineno, file=None, line=None) -> None:
    """Show the library's FutureWarnings (an old bundled name, ...) and advice as one ``note:`` line; others as usual."""
    if issubclass(category, (FutureWarning, AdviceWarning)):
        typer.echo(f"note: {message}", err=True)
    else:
        _SHOWWARNING(message, category, filename, lineno, file, line)


def main() -> None:
    """Run the command line, showing the library's FutureWarnings as ``note:`` lines."""
    with warnings.catch_warnings():
        warnings.simplefilter("always", FutureWarning)
        warnings.simplefilter("always", AdviceWarning)
        warnings.showwarning = _show_note
        _main()


def _main() -> None:
    try:
        build_command()(standalone_mode=False)
    except WaferscopeError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(2)
    except (typer.Exit, SystemExit) as exc:
        code = getattr(exc, "exit_code", getattr(exc, "code", 0))
        sys.exit(code)
    except OSError as exc:
        # A file the system refused (a folder where a file goes, no permission, disk full): the user's
        # environment, not a bug. Commands check their outputs before working; this is the fallback.
        if exc.filename is None:
            raise
        typer.secho(f"error: {exc.filename}: {exc.strerror or exc}", fg=typer.colors.RED, err=True)
        sys.exit(2)
    except Exception as exc:  # usage errors (unknown option, extra argument) arrive here in non-standalone mode
        if isinstance(exc, _usage_error_types()):
            exc.show()
            sys.exit(exc.exit_code)
        if isinstance(exc, typer.Abort):
            sys.exit(130)
        raise


def _usage_error_types() -> tuple[type, ...]:
    """Return the ClickException classes a usage error can be.

    Typer >= 0.2x raises those of its vendored copy of click (``typer._click``), older
    typer those of click itself.
    """
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
