"""One TOML table → one frozen dataclass, with a clear error for an unknown key or a wrong
type. Shared by roxd.toml's sections (config.py) and the [alerts] tables
(alerts/settings.py); it imports neither, so both can use it without an import cycle."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, get_type_hints

from roxd.errors import ConfigError

_EXPECTED = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}


def parse_table(cls: type, name: str, values: Mapping[str, Any], source: str, *,
                non_negative: bool = False) -> Any:
    """cls(**values) after checking every key and value type; `name` prefixes keys in errors.
    non_negative: integers and numbers below zero are errors too."""
    hints = get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(
                source, f"unknown key {name}.{key}; known: {', '.join(sorted(known))}")
        kwargs[key] = coerce(hints[key], value, f"{name}.{key}", source,
                             non_negative=non_negative)
    return cls(**kwargs)


def coerce(hint: Any, value: Any, key: str, source: str, *, non_negative: bool = False) -> Any:
    """value checked against hint (bool, int, float, str, tuple[str, ...]); ints pass for
    floats and become floats, lists of strings become tuples."""
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif hint is str:
        ok = isinstance(value, str)
    else:  # tuple[str, ...]
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        value = tuple(value) if ok else value
    if not ok:
        raise ConfigError(source, f"{key} must be {_EXPECTED.get(hint, 'a list of strings')}, "
                                  f"not {value!r}")
    if non_negative and hint in (int, float) and value < 0:
        raise ConfigError(source, f"{key} must not be negative, not {value!r}")
    return value
