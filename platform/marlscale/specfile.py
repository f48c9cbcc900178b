"""Input checks every command shares: spec files and `--set` values (YAML in which `1e-4` is a
number, read with errors that name the file), typed fields (`setting`: a dataclass field whose
metadata says what it allows, checked by `check_value` / `check_fields` with one message
format), and whether an output folder can be created.

YAML 1.1 (PyYAML's) reads a float only with a dot, so `lr: 1e-4` would be the string '1e-4';
researchers write learning rates that way, so `SpecLoader` also resolves scientific notation
without a dot as a float (`1e6`, `5E-4`, `-2e+3`). Everything else is PyYAML's safe loader.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import tempfile
from dataclasses import field
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


MAX_NODES = 100_000
"""The most values (mappings, lists and scalars, each alias counted as a copy of what it names)
a spec file or `--set` value may expand to: YAML aliases can make a few lines stand for
billions of values (an "alias bomb") that every later check, copy or message would expand."""
SHOWN_CHARS = 200
"""The most characters of a value an error message echoes (`shown`)."""


def loads(text: str, what: str = "the value") -> Any:
    """One YAML value (a `--set` value, a spec's text) with SpecLoader; a ValueError when its
    aliases expand to more than MAX_NODES values."""
    value = yaml.load(text, Loader=SpecLoader)  # noqa: S506 - a SafeLoader subclass
    size = expanded_size(value)
    if size > MAX_NODES:
        raise ValueError(f"{what} expands to more than {MAX_NODES:,} values ({_count_text(size)} "
                         f"with its YAML aliases expanded); allowed: at most {MAX_NODES:,} "
                         "values, each alias counted as a copy")
    return value


def _count_text(size: int) -> str:
    return "over 10^18 values" if size > 10**18 else f"{size:,} values"


def expanded_size(value: Any) -> int:
    """How many values (mappings, lists, scalars) `value` holds with every shared object
    counted each time it appears (as YAML aliases expand), counted without expanding it."""
    sizes: dict[int, int] = {}

    def size(item: Any) -> int:
        if not isinstance(item, (dict, list)):
            return 1
        known = sizes.get(id(item))
        if known is not None:
            return known
        sizes[id(item)] = 1  # a self-referencing alias counts once more
        children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
        total = 1 + sum(size(child) for child in children)
        sizes[id(item)] = min(total, 10**19)
        return sizes[id(item)]

    return size(value)


def shown(value: Any, limit: int = SHOWN_CHARS) -> str:
    """`repr(value)` as an error message echoes it: at most `limit` characters, the rest
    replaced by '…' (a value may be huge; the message stays one readable line). Values whose
    expansion is huge (shared objects) are not expanded to be cut."""
    if isinstance(value, (dict, list)) and expanded_size(value) > limit:
        text = reprlib_repr(value, limit)
    else:
        text = repr(value)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def reprlib_repr(value: Any, limit: int) -> str:
    """A bounded repr of a nested container (reprlib's, with room for `limit` characters)."""
    import reprlib

    short = reprlib.Repr()
    short.maxlevel, short.maxdict, short.maxlist = 4, 12, 12
    short.maxstring = short.maxother = short.maxlong = limit
    return short.repr(value)


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
        return loads(text, f"{path}: the {what} file")
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: not valid YAML: {one_line(str(error))}") from None
    except RecursionError:
        raise ValueError(f"{path}: the {what} file nests too deeply; allowed: a YAML or JSON "
                         "file of mappings, lists and values") from None


def read_json(path: str | os.PathLike, what: str, allowed: str) -> dict[str, Any]:
    """A run directory's JSON metadata file (spec.json, provenance.json, a fingerprint) as a
    mapping; a ValueError naming the file, what is wrong and `allowed` (what to do) when it
    cannot be read, is not UTF-8 JSON, or is not a mapping."""
    path = Path(path)
    if not path.is_file():  # a folder, or a device that never ends (/dev/zero)
        raise ValueError(f"{path}: the {what} is not a file; allowed: {allowed}")
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        problem = f"is not UTF-8 text (byte {error.start})"
    except json.JSONDecodeError as error:
        problem = f"is not JSON ({error})"
    except OSError as error:
        problem = f"cannot be read ({error.strerror or error})"
    except RecursionError:
        problem = "nests too deeply"
    else:
        if isinstance(values, dict):
            return values
        problem = f"holds a {type(values).__name__}, not a mapping"
    raise ValueError(f"{path}: the {what} {problem}; allowed: {allowed}")


def one_line(text: str) -> str:
    """A multi-line message (PyYAML's, say) as one line."""
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


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


# ---- typed fields -----------------------------------------------------------------------------
def setting(default: Any, source: str = "", *, kind: str, low: float | None = None,
            high: float | None = None, low_open: bool = False, high_open: bool = False,
            choices: tuple = (), optional: bool = False, doc: str = "",
            default_factory: Any = None) -> Any:
    """A typed dataclass field: `kind` is int, float, str, bool, mapping or list; `low`/`high`
    bound numbers (`low_open`/`high_open`: the bound itself excluded); `choices` lists allowed
    strings; `optional` allows None; `source` says where the default comes from; `doc` what it
    means (docs tables are generated from it). `default_factory` for mutable defaults."""
    metadata = {**typed(kind=kind, low=low, high=high, low_open=low_open, high_open=high_open,
                        choices=choices, optional=optional, doc=doc), "source": source}
    if default_factory is not None:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def typed(*, kind: str, low: float | None = None, high: float | None = None,
          low_open: bool = False, high_open: bool = False, choices: tuple = (),
          optional: bool = False, doc: str = "") -> dict[str, Any]:
    """The metadata of a typed value that is not a dataclass field (a function's argument):
    what `check_value` checks and `allowed` describes, as `setting` declares for fields."""
    return {"source": "", "kind": kind, "low": low, "high": high, "low_open": low_open,
            "high_open": high_open, "choices": choices, "optional": optional, "doc": doc}


def allowed(meta: dict[str, Any]) -> str:
    """What a field allows, in words (the end of every error message)."""
    kind, low, high = meta["kind"], meta["low"], meta["high"]
    if meta["choices"]:
        text = ", ".join(map(str, meta["choices"]))
    elif kind == "bool":
        text = "true, false"
    elif kind in ("mapping", "str", "list"):
        text = {"mapping": "a mapping", "str": "a string", "list": "a list"}[kind]
    elif kind == "int":
        text = "an integer" + ("" if low is None else f" >= {low:g}") + \
            ("" if high is None else f" and <= {high:g}")
    elif low is not None and high is not None:
        text = (f"a number in {'(' if meta['low_open'] else '['}{low:g}, {high:g}"
                f"{')' if meta.get('high_open') else ']'}")
    elif low is not None:
        text = f"a finite number {'>' if meta['low_open'] else '>='} {low:g}"
    else:
        text = "a finite number"
    return f"None or {text}" if meta["optional"] else text


def value_ok(value: Any, meta: dict[str, Any]) -> bool:
    """Whether `value` is what the field's metadata allows."""
    if value is None:
        return meta["optional"]
    kind, low, high = meta["kind"], meta["low"], meta["high"]
    if kind in ("int", "float"):
        if kind == "int" and not (isinstance(value, int) and not isinstance(value, bool)):
            return False
        if not is_finite_number(value):
            return False
        if low is not None and not (value > low if meta["low_open"] else value >= low):
            return False
        return high is None or (value < high if meta.get("high_open") else value <= high)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "mapping":
        return isinstance(value, dict)
    if kind == "list":
        return isinstance(value, list)
    return isinstance(value, str) and (not meta["choices"] or value in meta["choices"])


def check_value(name: str, value: Any, meta: dict[str, Any]) -> None:
    """A ValueError naming the setting, the value and what is allowed, if `value` is not."""
    if not value_ok(value, meta):
        raise ValueError(f"{name}={shown(value)} is invalid; allowed: {allowed(meta)}")


def check_fields(instance: Any, prefix: str = "") -> None:
    """`check_value` on every typed field of a dataclass instance (fields without `kind`
    metadata are left to the class's own checks); `prefix` is put before each name."""
    for f in dataclasses.fields(instance):
        if "kind" in f.metadata:
            check_value(f"{prefix}{f.name}", getattr(instance, f.name), f.metadata)


def field_meta(cls: Any, name: str) -> dict[str, Any]:
    """The metadata of one typed field of a dataclass."""
    return next(f.metadata for f in dataclasses.fields(cls) if f.name == name)


def normalise(cls: Any, values: dict[str, Any], what: str) -> dict[str, Any]:
    """User values for a dataclass of typed fields, by name; an unknown name raises (naming
    `what` and the allowed names). Integral floats (`1e3`) of integer fields become ints, so
    scientific notation works everywhere."""
    fields = {f.name: f.metadata.get("kind") for f in dataclasses.fields(cls)}
    for key in values:
        if key not in fields:
            raise ValueError(f"{what} {shown(key)} is unknown; allowed: {', '.join(fields)}")
    return {key: int(value) if fields[key] == "int" and isinstance(value, float)
            and math.isfinite(value) and value.is_integer() else value
            for key, value in values.items()}


def markdown_table(cls: Any, key: str = "setting", source: bool = True,
                   leave_out: tuple[str, ...] = ()) -> str:
    """A declaration's table for the docs: each typed field's name, default, what it allows,
    (where the default comes from) and meaning; the docs pages hold these tables and a test
    keeps them equal, so a new key's docs line comes from its declaration. `leave_out`: fields
    another table shows (a base class's)."""
    header = f"| {key} | default | allowed |" + (" source |" if source else "") + " meaning |"
    rows = [header, "|---|---|---|" + ("---|" if source else "") + "---|"]
    for f in dataclasses.fields(cls):
        if f.name in leave_out:
            continue
        meta = f.metadata
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        origin = f" {meta['source'] or 'marlscale'} |" if source else ""
        cells = (f.name, _yaml(default), allowed(meta))
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + f" |{origin} "
                    + meta["doc"].replace("|", "\\|") + " |")
    return "\n".join(rows)


def _yaml(value: Any) -> str:
    """A default as YAML would spell it."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (dict, list)):
        return yaml.safe_dump(value, default_flow_style=True).strip() if value else \
            ("{}" if isinstance(value, dict) else "[]")
    return str(value) if value != "" else '""'
