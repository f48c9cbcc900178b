"""Input checks every command shares: spec files and `--set` values (YAML in which `1e-4` is a
number, read with errors that name the file), the finite-number check of every spec section,
and whether an output folder can be created.

YAML 1.1 (PyYAML's) reads a float only with a dot, so `lr: 1e-4` would be the string '1e-4';
researchers write learning rates that way, so `SpecLoader` also resolves scientific notation
without a dot as a float (`1e6`, `5E-4`, `-2e+3`). Everything else is PyYAML's safe loader.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import yaml


class SpecLoader(yaml.SafeLoader):
    """PyYAML's safe loader, plus floats in scientific notation without a dot."""


SpecLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def loads(text: str) -> Any:
    """One YAML value (a `--set` value, a spec's text) with SpecLoader."""
    return yaml.load(text, Loader=SpecLoader)  # noqa: S506 - a SafeLoader subclass


def read(path: str | os.PathLike, what: str = "spec") -> Any:
    """A YAML (or JSON) spec file's contents; a ValueError naming the file when it is missing,
    a folder, not UTF-8 text or not valid YAML."""
    path = Path(path)
    allowed = "allowed: a YAML or JSON file (UTF-8 text)"
    if path.is_dir():
        raise ValueError(f"{path}: the {what} file is a directory; {allowed}")
    if not path.is_file():
        raise ValueError(f"{path}: the {what} file does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: the {what} file is not UTF-8 text (byte {error.start}); "
                         f"{allowed}") from None
    except OSError as error:
        raise ValueError(f"{path}: the {what} file cannot be read ({error.strerror}); "
                         f"{allowed}") from None
    try:
        return loads(text)
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: not valid YAML: {error}") from None


def is_finite_number(value: Any) -> bool:
    """An int or float (not a bool) that is neither NaN nor infinite."""
    return (not isinstance(value, bool) and isinstance(value, (int, float))
            and math.isfinite(value))


def blocking_ancestor(path: str | os.PathLike) -> Path | None:
    """None when a folder can be created (or written) at `path`; else the nearest existing
    ancestor that prevents it (a file, or a folder that cannot be written). Tried by making and
    removing a temporary folder: `os.access` is wrong for root, on /proc and on read-only
    mounts."""
    existing = Path(path).absolute()
    while not existing.exists():
        existing = existing.parent
    if existing.is_dir():
        try:
            os.rmdir(tempfile.mkdtemp(prefix=".marlscale-check-", dir=existing))
            return None
        except OSError:
            pass
    return existing
