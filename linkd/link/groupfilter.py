"""Cluster Linking's ``consumer.offset.group.filters`` JSON: which consumer groups a link syncs.

Format::

    {"groupFilters": [{"name": "orders-", "patternType": "PREFIXED", "filterType": "INCLUDE"},
                      {"name": "*", "patternType": "LITERAL", "filterType": "INCLUDE"},
                      {"name": "orders-test", "patternType": "LITERAL", "filterType": "EXCLUDE"}]}

A group is synced when some INCLUDE filter matches it and no EXCLUDE filter does (exclude wins). With no
INCLUDE filter nothing is synced. The LITERAL name ``*`` matches every group.

``auto.create.mirror.topics.filters`` has the same shape under ``topicFilters`` (``parse(text, key=...)``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass(frozen=True)
class _Filter:
    name: str
    prefixed: bool
    include: bool

    def matches(self, group: str) -> bool:
        if self.prefixed:
            return group.startswith(self.name)
        return self.name == "*" or self.name == group


@dataclass(frozen=True)
class GroupFilter:
    filters: tuple[_Filter, ...]

    @classmethod
    def parse(cls, text: str, key: str = "groupFilters") -> GroupFilter:
        if not text:
            return cls(())
        doc = json.loads(text)
        if not isinstance(doc, dict) or not isinstance(doc.get(key), list):
            raise ValueError(f'expected {{"{key}": [...]}}')
        filters = []
        for i, item in enumerate(doc[key]):
            if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"]:
                raise ValueError(f"{key}[{i}] needs a non-empty string 'name'")
            pattern = str(item.get("patternType", "LITERAL")).upper()
            kind = str(item.get("filterType", "INCLUDE")).upper()
            if pattern not in ("LITERAL", "PREFIXED"):
                raise ValueError(f"{key}[{i}].patternType must be LITERAL or PREFIXED, got {pattern}")
            if kind not in ("INCLUDE", "EXCLUDE"):
                raise ValueError(f"{key}[{i}].filterType must be INCLUDE or EXCLUDE, got {kind}")
            filters.append(_Filter(item["name"], pattern == "PREFIXED", kind == "INCLUDE"))
        return cls(tuple(filters))

    def names_literally(self, name: str) -> bool:
        """An INCLUDE filter names exactly ``name`` (not by ``*`` or a prefix)."""
        return any(f.include and not f.prefixed and f.name == name for f in self.filters)

    def includes(self, group: str) -> bool:
        included = any(f.include and f.matches(group) for f in self.filters)
        excluded = any(not f.include and f.matches(group) for f in self.filters)
        return included and not excluded
