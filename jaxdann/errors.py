"""What a user can get wrong, as one family of exceptions.

Every error a user can fix (a setting, their data, a damaged run-folder file, a weights file)
derives from :class:`UserError`; its message is one line naming the key or file and the fix.
The command-line tools report what :func:`is_user_error` accepts (a :class:`UserError`, or an
``OSError`` naming its file) in one line and exit with its ``exit_code``; anything else is a bug
in jaxdann (or a method) and keeps its traceback.

Exit status, the same for every command: 0 done; 1 the run failed (unreadable data or run-folder
files, a weights file that does not fit, divergence); 2 the settings or arguments were refused (a
bad flag or value, a name that does not exist, settings that do not fit the data or the run in
the folder, a folder in use); 130 interrupted.
"""

from __future__ import annotations

__all__ = [
    "UserError",
    "ConfigError",
    "FolderInUse",
    "MissingFile",
    "DataError",
    "DamagedFile",
    "ConversionError",
    "TrainingDiverged",
    "INTERRUPTED",
    "exit_code",
    "is_user_error",
]

INTERRUPTED = 130  # the exit code of a command stopped by Ctrl-C


class UserError(Exception):
    """Something the user can fix; the message says what and how."""

    exit_code = 1


class ConfigError(UserError, ValueError):
    """A bad config file, key, value or command-line argument."""

    exit_code = 2


class FolderInUse(ConfigError):
    """The run folder is held by another running process."""


class MissingFile(ConfigError, FileNotFoundError):
    """A file a setting names (e.g. ``model.pretrained``) does not exist; the message says how
    to make it."""


class DataError(UserError, ValueError):
    """Data that cannot be read or used: the message names the path and the fix."""


class DamagedFile(UserError, ValueError):
    """A run-folder file that cannot be read; the message names it and what to do."""


class ConversionError(UserError, ValueError):
    """A weights file or state dict that does not describe the model it should fill."""


class TrainingDiverged(UserError, RuntimeError):
    """A non-finite loss or update: the run stopped, its last good checkpoint is kept."""


def exit_code(error: BaseException) -> int:
    """The exit status for ``error``: its class's ``exit_code``; 1 for anything else."""
    return getattr(error, "exit_code", 1) if isinstance(error, UserError) else 1


def is_user_error(error: BaseException) -> bool:
    """Whether a command reports ``error`` in one line: a :class:`UserError`, or an
    ``OSError`` naming a file (missing, not permitted, disk full: the user's to fix). Anything
    else is a bug and keeps its traceback."""
    return isinstance(error, UserError) or (
        isinstance(error, OSError) and getattr(error, "filename", None) is not None
    )
