"""Error types that the public API raises for bad input.

Every user-facing mistake (a bad config value, malformed data, a missing file) raises a subclass of
:class:`LifelongError` whose message names the field, the bad value and what is allowed. The CLI turns
these into one line on stderr and exit code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class LifelongError(Exception):
    """Base class of every error caused by the user's input rather than by a bug."""


class ConfigError(LifelongError, ValueError):
    """A configuration field has a bad value (unknown name, out of range, wrong type)."""


class DataError(LifelongError, ValueError):
    """Data handed to the library cannot be used as it is (shapes, labels, NaN, empty sets)."""


class MissingFileError(LifelongError, FileNotFoundError):
    """A file the user pointed at (config, dataset, checkpoint) does not exist."""


class StorageError(LifelongError, OSError):
    """A result or checkpoint cannot be written where the user asked: the disk is full, the file is
    read-only. The message names the file and the cause; the run is marked failed where that is still
    possible."""


class TrainingError(LifelongError, RuntimeError):
    """Training cannot continue (a non-finite loss); the message says where it happened."""


class ResumeError(LifelongError, RuntimeError):
    """A run cannot be resumed (already finished, no usable checkpoint)."""


class StrategyError(LifelongError, RuntimeError):
    """A strategy broke its contract with the runner (a plan that does not match its training set, a
    learning-rate scale per parameter group missing); the message names the strategy and the fix."""
