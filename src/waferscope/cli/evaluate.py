"""`waferscope evaluate …`: the evaluation protocols of :mod:`waferscope.evaluate` from the command line.

Each area registers its own sub-commands (``cli/evaluate_classification.py``,
``cli/evaluate_detection.py``), so the protocols stay apart and this file stays small.
"""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True, help="Evaluation protocols: real-data k-fold, held-out, learning "
                  "curve, class-mix shift, detector dev protocol, explanation localisation, robustness to fab wafers.")


def register_all() -> None:
    """Add every ``waferscope evaluate`` sub-command."""
    from waferscope.cli import evaluate_classification, evaluate_detection, evaluate_retrieval, evaluate_robustness

    evaluate_classification.register(app)
    evaluate_detection.register(app)
    evaluate_robustness.register(app)
    evaluate_retrieval.register(app)
