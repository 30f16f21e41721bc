"""Configuration files (TOML) onto the keyword-only config dataclasses, with unknown keys refused.

A config file mirrors the dataclass tree: `[ingest]`, `[ingest.quality]`, ... Values given on the command
line are applied after the file, so flags override it.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

from interleaf.errors import UsageError


def load_toml(path: str) -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        raise UsageError("TOML config files need Python 3.11 or newer (tomllib)") from None
    from interleaf import storage
    try:
        return tomllib.loads(storage.read_bytes(path).decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"config file {path}: {e}") from None


# keys that moved to another section, so that an older config file gets told where they went
MOVED = {f"fetch.fetch.{key}": f"image_rules.{key}"
         for key in ("allowed_formats", "min_side", "max_side", "max_aspect_ratio", "max_pixels")}


def apply(obj: Any, values: dict, where: str = "") -> Any:
    """A copy of dataclass `obj` with `values` applied (nested dicts go into nested dataclasses)."""
    if not dataclasses.is_dataclass(obj):
        raise UsageError(f"{where or 'config'}: not a section")
    hints = typing.get_type_hints(type(obj))
    fields = {f.name for f in dataclasses.fields(obj)}
    changes = {}
    for key, value in values.items():
        name = key.replace("-", "_")
        here = f"{where}.{key}" if where else key
        if name not in fields:
            if here in MOVED:
                section, _, key = MOVED[here].rpartition(".")
                raise UsageError(f"config key {here!r} moved: write it as {key} in [{section}]")
            raise UsageError(f"unknown config key {here!r}; known keys here: {', '.join(sorted(fields))}")
        current = getattr(obj, name)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise UsageError(f"config key {here!r} is a section; write it as [{here}]")
            changes[name] = apply(current, value, here)
        else:
            changes[name] = _coerce(value, hints[name], here)
    try:
        return dataclasses.replace(obj, **changes)
    except (ValueError, TypeError) as e:  # a check of the section's own (__post_init__)
        raise UsageError(f"[{where or 'config'}]: {str(e).splitlines()[0] if str(e) else type(e).__name__}") \
            from None


def _coerce(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if isinstance(value, float) and value != value:
        raise UsageError(f"config key {where!r}: nan is not a setting")
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise UsageError(f"config key {where!r}: expected a list, found {type(value).__name__} {value!r}")
        item = args[0] if args and (origin is list or args[-1] is Ellipsis or len(args) == 1) else None
        if item is not None:  # list[X] and tuple[X, ...]: every element checked as an X
            value = [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return value if origin is list else tuple(value)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is not type(None):
                try:
                    return _coerce(value, a, where)
                except UsageError:
                    continue
        raise UsageError(f"config key {where!r}: {value!r} does not fit {hint}")
    if isinstance(hint, type) and (not isinstance(value, hint) or (hint is int and isinstance(value, bool))):
        raise UsageError(f"config key {where!r}: expected {hint.__name__}, found {type(value).__name__} {value!r}")
    return value


def to_dict(obj: Any) -> dict:
    return dataclasses.asdict(obj)


def build(cls: type, values: dict, where: str) -> Any:
    """A dataclass with required fields from a dict (unknown keys refused, types checked)."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        name = key.replace("-", "_")
        if name not in fields:
            raise UsageError(f"unknown config key '{where}.{key}'; known keys here: {', '.join(sorted(fields))}")
        kwargs[name] = _coerce(value, hints[name], f"{where}.{key}")
    missing = [n for n, f in fields.items() if n not in kwargs and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise UsageError(f"config section '{where}' needs {', '.join(missing)}")
    return cls(**kwargs)
