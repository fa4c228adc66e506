"""YAML for ``-o yaml``: JSON-shaped data (dicts, lists, str, int, float, bool, None) in block style.

Written here rather than pulled in with PyYAML: the CLI only ever emits, and only JSON's types. Every string
is written as a double-quoted scalar with JSON's escapes, which YAML's double-quoted style accepts, so no
value can be misread as another type (``"NO"``, ``"1e3"``, ``"null"`` stay strings)."""

from __future__ import annotations

import json
import math
import re

_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
_RESERVED = frozenset({"true", "false", "null", "yes", "no", "on", "off", "y", "n", "~"})


def dumps(data) -> str:
    lines: list[str] = []
    _emit(data, 0, lines)
    return "\n".join(lines) + "\n"


def _scalar(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return ".nan"
        if math.isinf(value):
            return ".inf" if value > 0 else "-.inf"
        return repr(value)
    return json.dumps(str(value), ensure_ascii=False)


def _emit(value, indent: int, lines: list[str]) -> None:
    pad = " " * indent
    if isinstance(value, dict):
        if not value:
            lines.append(pad + "{}")
        for key, item in value.items():
            text = str(key)
            plain = _PLAIN_KEY.fullmatch(text) and text.lower() not in _RESERVED
            head = f"{pad}{text if plain else _scalar(text)}:"
            if isinstance(item, (dict, list)) and item:
                lines.append(head)
                _emit(item, indent + 2, lines)
            else:
                lines.append(f"{head} {_inline(item)}")
    elif isinstance(value, list):
        if not value:
            lines.append(pad + "[]")
        for item in value:
            if isinstance(item, (dict, list)) and item:
                nested: list[str] = []
                _emit(item, indent + 2, nested)
                lines.append(pad + "- " + nested[0][indent + 2 :])
                lines.extend(nested[1:])
            else:
                lines.append(f"{pad}- {_inline(item)}")
    else:
        lines.append(pad + _scalar(value))


def _inline(value) -> str:
    if isinstance(value, dict):
        return "{}"
    if isinstance(value, list):
        return "[]"
    return _scalar(value)
