"""The errors waferscope raises for bad input.

Every problem a user can cause (a malformed file, a bad config, a run directory of the wrong kind)
surfaces as one :class:`WaferscopeError` whose message names the file and the problem. The CLI
prints that message alone, with no traceback.
"""

from __future__ import annotations

from pathlib import Path


class WaferscopeError(Exception):
    """A problem with the user's input, reported as one clear line."""

    def __init__(self, problem: str, path: str | Path | None = None):
        self.problem = problem
        self.path = None if path is None else str(path)
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


class DataError(WaferscopeError):
    """A data file or data set that cannot be read or is not a valid wafer-map set."""


class ConfigError(WaferscopeError):
    """A configuration (YAML, CLI options, model name) that cannot be used."""


class RunDirError(WaferscopeError):
    """A run directory that is missing, of another model type, or from an incompatible version."""


class AdviceWarning(UserWarning):
    """Advice on a choice that works but is known to do poorly (the CLI shows it as a ``note:`` line)."""
