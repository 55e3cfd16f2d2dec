"""Reading and writing a run folder's files, so that neither a kill nor damage goes unnoticed.

Files are replaced whole (a temporary file, then a rename): a run stopped at any moment leaves
the old version or the new one, never half of one. A file that does not parse is an error that
names it and what to do.
"""

from __future__ import annotations

import json
import os
from typing import Any

__all__ = ["DamagedFile", "read_json", "write_text", "write_json"]


class DamagedFile(ValueError):
    """A run-folder file that cannot be read; the message names it and what to do."""


def read_json(path: str, fix: str = "restore it or choose a new --workdir") -> Any:
    """``path``'s JSON; OSError if it is missing, :class:`DamagedFile` if it does not parse."""
    with open(path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as error:
            raise DamagedFile(f"{path} is not valid JSON ({error}); {fix}.") from None


def write_text(path: str, text: str) -> None:
    """Writes ``path`` whole, through a temporary file: never a half-written file."""
    with open(f"{path}.tmp", "w") as f:
        f.write(text)
    os.replace(f"{path}.tmp", path)


def write_json(path: str, value: Any) -> None:
    write_text(path, json.dumps(value, indent=2, sort_keys=True))
