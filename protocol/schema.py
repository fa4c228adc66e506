"""Message structures generated from Apache Kafka's JSON message definitions.

The definitions ship with kafka-python as package data (``kafka.protocol.schemas.resources``); they are
the same files Kafka generates its Java classes from. Nothing here is transcribed by hand: the JSON is
read (``//`` comments stripped), each field's ``versions`` / ``nullableVersions`` / ``taggedVersions``
ranges are resolved for one API version, and the result is a tree of constructs from ``primitives``.

``KafkaStruct`` decodes to a plain ``dict`` with snake_case keys. Fields that do not exist in the version
are absent from the dict; tagged fields missing on the wire take their default. Tags the schema does not
know are kept as ``"_unknown_tags": [(tag, payload), ...]`` so they survive a decode/encode round trip.
"""

from __future__ import annotations

import copy
import functools
import importlib.resources
import json
import logging
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import primitives as p
from .errors import LocalProtocolError, RemoteProtocolError

UNKNOWN_TAGS = "_unknown_tags"

_log = logging.getLogger("protocol")

_RESOURCES = "kafka.protocol.schemas.resources"
_FIXED = {
    "int8": p.Int8,
    "int16": p.Int16,
    "int32": p.Int32,
    "int64": p.Int64,
    "uint16": p.UInt16,
    "uint32": p.UInt32,
    "float64": p.Float64,
    "bool": p.Bool,
    "uuid": p.Uuid,
}


def snake_case(name: str) -> str:
    """``PartitionIndex`` -> ``partition_index``; runs of capitals stay together (``SASLAuth`` -> ``sasl_auth``)."""
    name = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    name = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)
    return name.lower()


@dataclass(frozen=True)
class VersionRange:
    low: int
    high: int  # inclusive; a large number for "N+"

    @classmethod
    def parse(cls, text: str | None) -> VersionRange:
        if text is None or text.strip() == "none":
            return cls(1, 0)  # empty
        text = text.strip()
        if text.endswith("+"):
            return cls(int(text[:-1]), 1 << 15)
        if "-" in text:
            low, high = text.split("-", 1)
            return cls(int(low), int(high))
        return cls(int(text), int(text))

    def __contains__(self, version: object) -> bool:
        return isinstance(version, int) and self.low <= version <= self.high


@dataclass
class FieldSpec:
    name: str  # JSON name, CamelCase
    key: str  # dict key, snake_case
    type: str  # JSON type: "int32", "string", "[]Foo", "Foo", "records", ...
    versions: VersionRange
    nullable: VersionRange
    tagged: VersionRange
    tag: int | None
    default: str | None
    fields: list[FieldSpec] | None  # struct members (inline or resolved from commonStructs)

    @property
    def is_array(self) -> bool:
        return self.type.startswith("[]")

    @property
    def element_type(self) -> str:
        return self.type[2:] if self.is_array else self.type


@dataclass
class MessageSpec:
    name: str  # "FetchRequest"
    kind: str  # "request" | "response" | "header" | "data"
    api_key: int | None
    valid: VersionRange
    flexible: VersionRange
    fields: list[FieldSpec]
    unstable_latest: bool = False
    listeners: list[str] = field(default_factory=list)


def _strip_comments(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("//"))


def _parse_fields(raw_fields: list[dict], common: dict[str, list[dict]]) -> list[FieldSpec]:
    specs = []
    for raw in raw_fields:
        ftype = raw["type"]
        element = ftype[2:] if ftype.startswith("[]") else ftype
        sub = None
        if "fields" in raw:
            sub = _parse_fields(raw["fields"], common)
        elif element in common:
            sub = _parse_fields(common[element], common)
        elif element not in _FIXED and element not in ("string", "bytes", "records"):
            raise LocalProtocolError(f"field {raw['name']} has unknown type {ftype}")
        specs.append(
            FieldSpec(
                name=raw["name"],
                key=snake_case(raw["name"]),
                type=ftype,
                versions=VersionRange.parse(raw.get("versions")),
                nullable=VersionRange.parse(raw.get("nullableVersions")),
                tagged=VersionRange.parse(raw.get("taggedVersions")),
                tag=raw.get("tag"),
                default=raw.get("default"),
                fields=sub,
            )
        )
    return specs


def _load_message(text: str) -> MessageSpec:
    raw = json.loads(_strip_comments(text))
    common = {c["name"]: c["fields"] for c in raw.get("commonStructs", [])}
    return MessageSpec(
        name=raw["name"],
        kind=raw["type"],
        api_key=raw.get("apiKey"),
        valid=VersionRange.parse(raw["validVersions"]),
        flexible=VersionRange.parse(raw.get("flexibleVersions")),
        fields=_parse_fields(raw["fields"], common),
        unstable_latest=bool(raw.get("latestVersionUnstable", False)),
        listeners=list(raw.get("listeners", [])),
    )


@functools.cache
def load_all() -> dict[str, MessageSpec]:
    """Every message definition shipped, by JSON name (``"FetchRequest"``)."""
    specs = {}
    for entry in importlib.resources.files(_RESOURCES).iterdir():
        if entry.name.endswith(".json"):
            spec = _load_message(entry.read_text(encoding="utf-8"))
            specs[spec.name] = spec
    return specs


# ---------------------------------------------------------------------------------------------------
# Defaults


def _default_value(spec: FieldSpec, version: int, codec: p.KafkaPrimitive) -> Any:
    """The value a field takes when the encoder is not given one, per the JSON ``default``."""
    nullable = version in spec.nullable
    raw = None if spec.default is None else str(spec.default)  # a few files write numbers/bools unquoted
    if raw is not None and raw.strip().lower() == "null":
        if not nullable:
            raise LocalProtocolError(f"field {spec.name} defaults to null but is not nullable in v{version}")
        return None
    if spec.is_array:
        return []
    element = spec.type
    if spec.fields is not None:
        inner = codec.inner if isinstance(codec, p.NullableStruct) else codec
        return inner.default()
    if raw is None or raw == "":
        if element == "string":
            return ""
        if element in ("bytes", "records"):
            return None if element == "records" else b""
        return codec.default()
    if element == "bool":
        return raw.strip().lower() == "true"
    if element == "string":
        return raw
    if element == "float64":
        return float(raw)
    if element in ("int8", "int16", "int32", "int64", "uint16", "uint32"):
        return int(raw, 0)
    if element == "uuid":
        return p.ZERO_UUID
    raise LocalProtocolError(f"cannot interpret default {raw!r} of field {spec.name}")


# ---------------------------------------------------------------------------------------------------
# The struct construct


_IMMUTABLE = (int, float, str, bytes, bool, type(None), uuid.UUID)


def _copier(value: Any) -> Callable[[Any], Any] | None:
    """How to make a fresh copy of a default: None (immutable: shared), a shallow copy for a list or dict
    of immutable values (the tagged structs' defaults, empty arrays), else a deep copy. A Fetch answer
    fills three struct defaults per partition: at 10,000 partitions deep copies were most of its decoding."""
    if isinstance(value, _IMMUTABLE):
        return None
    if isinstance(value, list) and all(isinstance(v, _IMMUTABLE) for v in value):
        return list.copy
    if isinstance(value, dict) and all(isinstance(v, _IMMUTABLE) for v in value.values()):
        return dict.copy
    return copy.deepcopy


class _Member:
    __slots__ = ("key", "codec", "default", "tag", "default_payload", "copy_default")

    def __init__(self, key: str, codec: p.KafkaPrimitive, default: Any, tag: int | None) -> None:
        self.key = key
        self.codec = codec
        self.default = default
        self.tag = tag
        self.default_payload: bytes | None = None
        self.copy_default = _copier(default)

    def fresh_default(self) -> Any:
        copier = self.copy_default
        return self.default if copier is None else copier(self.default)


class KafkaStruct(p.KafkaPrimitive):
    """One struct of one message version: regular fields in wire order, then (if flexible) tagged fields."""

    def __init__(self, name: str, flexible: bool, lenient: bool = False) -> None:
        super().__init__()
        self.name = name
        self.flexible = flexible
        self.lenient = lenient
        self.members: list[_Member] = []
        self.tagged: dict[int, _Member] = {}
        self._plan: tuple = ()

    def add(self, member: _Member) -> None:
        if member.tag is None:
            self.members.append(member)
        else:
            if member.tag in self.tagged:
                raise LocalProtocolError(f"{self.name}: duplicate tag {member.tag}")
            self.tagged[member.tag] = member

    def seal(self) -> None:
        self._plan = tuple((m.key, m.codec.read) for m in self.members)
        for member in self.tagged.values():
            out: list = []
            member.codec.write(out, member.default)
            member.default_payload = b"".join(out)
        self._tag_order = sorted(self.tagged)

    def default(self) -> Any:
        value = {m.key: m.fresh_default() for m in self.members}
        for tag in self._tag_order:
            member = self.tagged[tag]
            value[member.key] = member.fresh_default()
        return value

    # -- decoding -------------------------------------------------------------------------------

    def _decode_tag(self, value: dict, tag: int, payload: bytes | memoryview) -> None:
        member = self.tagged.get(tag)
        if member is None:
            value.setdefault(UNKNOWN_TAGS, []).append((tag, bytes(payload)))
            return
        view = payload if isinstance(payload, memoryview) else memoryview(payload)
        value[member.key], _ = member.codec.read(view, 0)

    def _fill_tag_defaults(self, value: dict) -> None:
        for tag in self._tag_order:
            member = self.tagged[tag]
            if member.key not in value:
                value[member.key] = member.fresh_default()

    def read(self, buf: memoryview, pos: int) -> tuple[Any, int]:
        value: dict = {}
        for key, read in self._plan:
            value[key], pos = read(buf, pos)
        if self.flexible:
            if self.lenient and pos == len(buf):
                # The answer ends where its last tagged-field section should start (Tansu leaves out an
                # empty one): nothing is missing but the count, so read it as no tagged fields.
                _log.debug("%s: answer ends before its tagged-field section; read as none", self.name)
                count = 0
            else:
                count, pos = p.UnsignedVarint.read(buf, pos)
            if count:
                if count > len(buf) - pos:
                    raise RemoteProtocolError(f"{count} tagged fields cannot fit in {len(buf) - pos} bytes")
                for _ in range(count):
                    tag, pos = p.UnsignedVarint.read(buf, pos)
                    size, pos = p.UnsignedVarint.read(buf, pos)
                    end = pos + size
                    if end > len(buf):
                        raise RemoteProtocolError(f"{self.name}: tagged field {tag} of {size} bytes runs past the end")
                    self._decode_tag(value, tag, buf[pos:end])
                    pos = end
            if self.tagged:
                self._fill_tag_defaults(value)
        return value, pos

    def _parse(self, stream: Any, context: Any, path: str) -> Any:
        value: dict = {}
        for member in self.members:
            value[member.key] = member.codec._parse(stream, context, path)
        if self.flexible:
            for tag, payload in p.TaggedFieldSection._parse(stream, context, path):
                self._decode_tag(value, tag, payload)
            self._fill_tag_defaults(value)
        return value

    # -- encoding -------------------------------------------------------------------------------

    def write(self, out: list, value: Any) -> None:
        if not isinstance(value, dict):
            raise LocalProtocolError(f"{self.name} must be a dict, given {type(value).__name__}")
        get = value.get
        for member in self.members:
            item = get(member.key, _MISSING)
            member.codec.write(out, member.default if item is _MISSING else item)
        if not self.flexible:
            return
        sections: list[tuple[int, bytes]] = []
        for tag in self._tag_order:
            member = self.tagged[tag]
            item = get(member.key, _MISSING)
            if item is _MISSING:
                continue
            chunk: list = []
            member.codec.write(chunk, item)
            payload = b"".join(chunk)
            if payload != member.default_payload:  # Kafka only writes tagged fields that differ
                sections.append((tag, payload))
        unknown = get(UNKNOWN_TAGS)
        if unknown:
            for tag, payload in unknown:
                if tag in self.tagged:
                    raise LocalProtocolError(f"{self.name}: unknown tag {tag} is a known tag")
                sections.append((int(tag), bytes(payload)))
            sections.sort(key=lambda section: section[0])
        p.TaggedFieldSection.write(out, sections)


_MISSING = object()


# ---------------------------------------------------------------------------------------------------
# Building constructs for one version


def _field_codec(spec: FieldSpec, version: int, flexible: bool, struct_name: str, lenient: bool = False) -> p.KafkaPrimitive:
    nullable = version in spec.nullable
    element = spec.element_type
    if spec.fields is not None:
        inner: p.KafkaPrimitive = build_struct(f"{struct_name}.{spec.name}", spec.fields, version, flexible, lenient)
    elif element in _FIXED:
        inner = _FIXED[element]
    elif element == "string":
        inner = p._String(nullable and not spec.is_array, flexible)
    elif element == "bytes":
        inner = p._Bytes(nullable and not spec.is_array, flexible)
    elif element == "records":
        inner = p._Records(flexible)
    else:
        raise LocalProtocolError(f"unsupported type {spec.type}")
    if spec.is_array:
        return p._Array(inner, nullable, flexible, lenient)
    if spec.fields is not None and nullable:
        return p.NullableStruct(inner)
    return inner


def build_struct(name: str, fields: list[FieldSpec], version: int, flexible: bool, lenient: bool = False) -> KafkaStruct:
    """``lenient``: decode a peer's answer liberally (see ``primitives._Array``); encoding is unaffected."""
    struct = KafkaStruct(name, flexible, lenient)
    for spec in fields:
        if version not in spec.versions:
            continue
        is_tagged = flexible and version in spec.tagged
        if spec.tag is not None and version in spec.tagged and not flexible:
            raise LocalProtocolError(f"{name}.{spec.name} is tagged in non-flexible v{version}")
        codec = _field_codec(spec, version, flexible, name, lenient)
        struct.add(_Member(spec.key, codec, _default_value(spec, version, codec), spec.tag if is_tagged else None))
    struct.seal()
    return struct


@functools.cache
def message_struct(message_name: str, version: int, lenient: bool = False) -> KafkaStruct:
    """The construct for one message (``"FetchResponse"``) at one version, built once and cached.
    ``lenient`` builds the liberal decoder for a peer's answers (null for a non-nullable array reads as
    empty); unknown tagged fields are kept either way, and error codes are left to the caller."""
    spec = load_all()[message_name]
    if version not in spec.valid:
        raise LocalProtocolError(f"{message_name} has no version {version}")
    return build_struct(message_name, spec.fields, version, version in spec.flexible, lenient)
