"""TOML text for configs: writing nested tables, reading one ``--set KEY=VALUE``.

The standard library reads TOML (``tomllib``; ``tomli`` on Python 3.10) but does not write it;
:func:`dumps_toml` writes the plain nested dicts of :class:`derain_cli.config.NLCLConfig`.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from derain_cli.errors import UsageError, setting


def parse_override(text: str) -> tuple[str, Any]:
    """``"train.lr=2e-4"`` -> ``("train.lr", 0.0002)``; the value is read as a TOML value.

    Values that are not valid TOML (``losses.sampling=random``) are taken as strings.
    """
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise UsageError(f"{setting('set')} {text!r}: expected SECTION.KEY=VALUE")
    try:
        value = toml_loads(f"v = {raw.strip()}")["v"]
    except Exception:
        value = raw.strip()
    return key.strip(), value


def dumps_toml(data: Mapping[str, Any]) -> str:
    """Write nested dicts of scalars/lists as TOML tables (enough for our frozen configs).

    ``None`` has no TOML spelling: such keys are written as comments and load back as defaults.
    """
    lines: list[str] = []

    def table(prefix: str, node: Mapping[str, Any]) -> None:
        scalars = [(k, v) for k, v in node.items() if not isinstance(v, Mapping)]
        tables = [(k, v) for k, v in node.items() if isinstance(v, Mapping)]
        if prefix and (scalars or not tables):
            lines.append(f"[{prefix}]")
        for key, value in scalars:
            if value is None:
                lines.append(f"# {_toml_key(key)} = (unset)")
            else:
                lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
        if prefix and (scalars or not tables):
            lines.append("")
        for key, value in tables:
            table(f"{prefix}.{_toml_key(key)}" if prefix else _toml_key(key), value)

    table("", data)
    return "\n".join(lines).rstrip() + "\n"


def toml_loads(text: str) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # Python 3.10
        import tomli as tomllib
    return tomllib.loads(text)


def _toml_key(key: str) -> str:
    bare = key.replace("_", "").replace("-", "").isalnum() and key.isascii()
    return key if bare else json.dumps(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, Sequence):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")
