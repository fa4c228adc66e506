"""Kafka wire primitives, each one a ``construct`` construct written once.

Every primitive can be used two ways, and both are kept in step by tests:

* as a ordinary construct (``Int32.parse(b"...")``, ``CompactString(True).build("x")``), through
  ``_parse``/``_build`` on a stream — the generic path that message schemas are assembled from;
* through ``read(buf, pos) -> (value, new_pos)`` on a memoryview and ``write(out, value)`` appending
  chunks to a list — the fast path used for the data-path messages (no stream object, no copies of
  large blobs, one ``b"".join`` at the end).

Decoding a peer's bytes raises ``RemoteProtocolError`` only. A length or count is checked against the
bytes that remain *before* anything is allocated, so a forged 2 GiB length costs nothing.
Encoding a value that does not fit raises ``LocalProtocolError``.
"""

from __future__ import annotations

import io
import logging
import struct
import uuid
from typing import Any

import construct
from construct.core import stream_read, stream_write

from .errors import LocalProtocolError, RemoteProtocolError

_log = logging.getLogger("protocol")

__all__ = [
    "KafkaPrimitive",
    "Int8",
    "Int16",
    "Int32",
    "Int64",
    "UInt16",
    "UInt32",
    "Bool",
    "Float64",
    "Uuid",
    "UnsignedVarint",
    "Varint",
    "Varlong",
    "String",
    "CompactString",
    "Bytes",
    "CompactBytes",
    "Records",
    "Array",
    "CompactArray",
    "NullableStruct",
    "TaggedFields",
    "encode_unsigned_varint",
    "remaining",
    "ensure_available",
]

ZERO_UUID = uuid.UUID(int=0)


def remaining(stream: Any) -> int:
    """Bytes left in a seekable stream (construct path); used to vet length prefixes before reading."""
    getbuffer = getattr(stream, "getbuffer", None)
    if getbuffer is not None:
        with getbuffer() as view:
            return len(view) - stream.tell()
    here = stream.tell()
    end = stream.seek(0, io.SEEK_END)
    stream.seek(here)
    return end - here


def ensure_available(needed: int, available: int, what: str) -> None:
    if needed > available:
        raise RemoteProtocolError(f"{what} needs {needed} bytes but only {available} remain")


def _read_exact(stream: Any, length: int, what: str) -> bytes:
    ensure_available(length, remaining(stream), what)
    return stream_read(stream, length, what)


class KafkaPrimitive(construct.Construct):
    """A construct that also offers the buffer-offset fast path (``read``/``write``)."""

    def read(self, buf: memoryview, pos: int) -> tuple[Any, int]:
        raise NotImplementedError

    def write(self, out: list, value: Any) -> None:
        raise NotImplementedError

    def default(self) -> Any:
        raise NotImplementedError

    def _build(self, obj: Any, stream: Any, context: Any, path: str) -> Any:
        out: list = []
        self.write(out, obj)
        data = b"".join(out)
        stream_write(stream, data, len(data), path)
        return obj

    def _sizeof(self, context: Any, path: str) -> int:
        raise construct.SizeofError("Kafka field sizes depend on their values", path=path)


class _Fixed(KafkaPrimitive):
    def __init__(self, fmt: str, zero: Any = 0) -> None:
        super().__init__()
        self._struct = struct.Struct(">" + fmt)
        self._size = self._struct.size
        self._zero = zero

    def default(self) -> Any:
        return self._zero

    def read(self, buf: memoryview, pos: int) -> tuple[Any, int]:
        end = pos + self._size
        if end > len(buf):
            raise RemoteProtocolError(f"truncated {self._struct.format[1:]} at byte {pos}")
        return self._struct.unpack_from(buf, pos)[0], end

    def write(self, out: list, value: Any) -> None:
        try:
            out.append(self._struct.pack(value))
        except struct.error as exc:
            raise LocalProtocolError(f"value {value!r} does not fit {self._struct.format[1:]}: {exc}") from None

    def _parse(self, stream: Any, context: Any, path: str) -> Any:
        return self._struct.unpack(_read_exact(stream, self._size, "fixed-size integer"))[0]

    def _sizeof(self, context: Any, path: str) -> int:
        return self._size


class _Bool(_Fixed):
    def __init__(self) -> None:
        super().__init__("b", False)

    def read(self, buf: memoryview, pos: int) -> tuple[Any, int]:
        value, pos = super().read(buf, pos)
        return value != 0, pos

    def write(self, out: list, value: Any) -> None:
        out.append(b"\x01" if value else b"\x00")

    def _parse(self, stream: Any, context: Any, path: str) -> Any:
        return super()._parse(stream, context, path) != 0


class _Uuid(KafkaPrimitive):
    def default(self) -> Any:
        return ZERO_UUID

    def read(self, buf: memoryview, pos: int) -> tuple[Any, int]:
        end = pos + 16
        if end > len(buf):
            raise RemoteProtocolError(f"truncated uuid at byte {pos}")
        return uuid.UUID(bytes=bytes(buf[pos:end])), end

    def write(self, out: list, value: Any) -> None:
        if isinstance(value, uuid.UUID):
            out.append(value.bytes)
        elif isinstance(value, (bytes, bytearray)) and len(value) == 16:
            out.append(bytes(value))
        else:
            raise LocalProtocolError(f"uuid field given {value!r}")

    def _parse(self, stream: Any, context: Any, path: str) -> Any:
        return uuid.UUID(bytes=_read_exact(stream, 16, "uuid"))

    def _sizeof(self, context: Any, path: str) -> int:
        return 16


Int8 = _Fixed("b")
Int16 = _Fixed("h")
Int32 = _Fixed("i")
Int64 = _Fixed("q")
UInt16 = _Fixed("H")
UInt32 = _Fixed("I")
Float64 = _Fixed("d", 0.0)
Bool = _Bool()
Uuid = _Uuid()


# ---------------------------------------------------------------------------------------------------
# Varints. Kafka bounds them (5 bytes for 32-bit values, 10 for 64-bit); a longer run of continuation
# bytes is a malformed frame, not something to keep shifting into a bignum.


def encode_unsigned_varint(value: int) -> bytes:
    if value < 0 or value > 0xFFFFFFFF:
        raise LocalProtocolError(f"unsigned varint {value} out of range")
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _read_uvarint(buf: memoryview, pos: int, max_bytes: int) -> tuple[int, int]:
    result = 0
    shift = 0
    end = len(buf)
    for _ in range(max_bytes):
        if pos >= end:
            raise RemoteProtocolError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
    raise RemoteProtocolError(f"varint longer than {max_bytes} bytes")


def _parse_uvarint(stream: Any, max_bytes: int) -> int:
    result = 0
    shift = 0
    for _ in range(max_bytes):
        chunk = stream.read(1)
        if not chunk:
            raise RemoteProtocolError("truncated varint")
        byte = chunk[0]
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result
        shift += 7
    raise RemoteProtocolError(f"varint longer than {max_bytes} bytes")


class _UnsignedVarint(KafkaPrimitive):
    """Unsigned LEB128 as Kafka uses for compact lengths and tags: at most 5 bytes, at most 2**32-1."""

    def default(self) -> Any:
        return 0

    def read(self, buf: memoryview, pos: int) -> tuple[Any, int]:
        if pos < len(buf) and buf[pos] < 0x80:  # the common one-byte case
            return buf[pos], pos + 1
        value, pos = _read_uvarint(buf, pos, 5)
        if value > 0xFFFFFFFF:
            raise RemoteProtocolError(f"unsigned varint {value} exceeds 32 bits")
        return value, pos

    def write(self, out: list, value: Any) -> None:
        out.append(encode_unsigned_varint(value))

    def _parse(self, stream: Any, context: Any, path: str) -> Any:
        value = _parse_uvarint(stream, 5)
        if value > 0xFFFFFFFF:
            raise RemoteProtocolError(f"unsigned varint {value} exceeds 32 bits")
        return value


class _ZigZag(KafkaPrimitive):
    """Signed zigzag varint (``bits`` = 32, 5 bytes max) or varlong (``bits`` = 64, 10 bytes max)."""

    def __init__(self, bits: int) -> None:
        super().__init__()
        self._bits = bits
        self._max_bytes = 5 if bits == 32 else 10
        self._low = -(1 << (bits - 1))
        self._high = (1 << (bits - 1)) - 1

    def default(self) -> Any:
        return 0

    def _finish(self, raw: int) -> int:
        if raw >> self._bits:
            raise RemoteProtocolError(f"zigzag varint {raw} exceeds {self._bits} bits")
        return (raw >> 1) ^ -(raw & 1)

    def read(self, buf: memoryview, pos: int) -> tuple[Any, int]:
        raw, pos = _read_uvarint(buf, pos, self._max_bytes)
        return self._finish(raw), pos

    def write(self, out: list, value: Any) -> None:
        if not isinstance(value, int) or not self._low <= value <= self._high:
            raise LocalProtocolError(f"value {value!r} does not fit a {self._bits}-bit varint")
        raw = ((value << 1) ^ (value >> (self._bits - 1))) & ((1 << self._bits) - 1)
        chunk = bytearray()
        while raw >= 0x80:
            chunk.append((raw & 0x7F) | 0x80)
            raw >>= 7
        chunk.append(raw)
        out.append(bytes(chunk))

    def _parse(self, stream: Any, context: Any, path: str) -> Any:
        return self._finish(_parse_uvarint(stream, self._max_bytes))


UnsignedVarint = _UnsignedVarint()
Varint = _ZigZag(32)
Varlong = _ZigZag(64)


# ---------------------------------------------------------------------------------------------------
# Length-prefixed values. ``compact`` means the flexible-version encoding: unsigned varint N+1, 0 = null.

_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")


class _LengthPrefixed(KafkaPrimitive):
    """Shared machinery for strings, bytes and records: read/write the length, enforce nullability."""

    kind = "bytes"

    def __init__(self, nullable: bool, compact: bool, wide: bool) -> None:
        super().__init__()
        self.nullable = nullable
        self.compact = compact
        self._prefix = _I32 if wide else _I16
        self._max = 0x7FFFFFFF if wide else 0x7FFF

    def _read_length(self, buf: memoryview, pos: int) -> tuple[int, int]:
        if self.compact:
            raw, pos = UnsignedVarint.read(buf, pos)
            length = raw - 1
        else:
            end = pos + self._prefix.size
            if end > len(buf):
                raise RemoteProtocolError(f"truncated {self.kind} length at byte {pos}")
            length = self._prefix.unpack_from(buf, pos)[0]
            pos = end
        if length < -1:
            raise RemoteProtocolError(f"negative {self.kind} length {length}")
        if length == -1 and not self.nullable:
            raise RemoteProtocolError(f"non-nullable {self.kind} encoded as null")
        if length > len(buf) - pos:
            raise RemoteProtocolError(f"{self.kind} of {length} bytes runs past the {len(buf) - pos} remaining")
        return length, pos

    def _parse_length(self, stream: Any) -> int:
        if self.compact:
            length = UnsignedVarint._parse(stream, None, "") - 1
        else:
            length = self._prefix.unpack(_read_exact(stream, self._prefix.size, f"{self.kind} length"))[0]
        if length < -1:
            raise RemoteProtocolError(f"negative {self.kind} length {length}")
        if length == -1 and not self.nullable:
            raise RemoteProtocolError(f"non-nullable {self.kind} encoded as null")
        ensure_available(length, remaining(stream), self.kind)
        return length

    def _write_length(self, out: list, length: int | None) -> None:
        if length is None:
            if not self.nullable:
                raise LocalProtocolError(f"non-nullable {self.kind} given None")
            out.append(b"\x00" if self.compact else self._prefix.pack(-1))
            return
        if length > self._max:
            raise LocalProtocolError(f"{self.kind} of {length} bytes is too long for its length prefix")
        out.append(encode_unsigned_varint(length + 1) if self.compact else self._prefix.pack(length))

    def default(self) -> Any:
        return None if self.nullable else self._empty

    _empty: Any = b""


class _String(_LengthPrefixed):
    kind = "string"
    _empty = ""

    def __init__(self, nullable: bool, compact: bool) -> None:
        super().__init__(nullable, compact, wide=False)

    @staticmethod
    def _text(raw: bytes | memoryview) -> str:
        try:
            return str(raw, "utf-8")
        except UnicodeDecodeError as exc:
            raise RemoteProtocolError(f"string is not valid UTF-8: {exc}") from None

    def read(self, buf: memoryview, pos: int) -> tuple[Any, int]:
        length, pos = self._read_length(buf, pos)
        if length < 0:
            return None, pos
        end = pos + length
        return self._text(buf[pos:end]), end

    def write(self, out: list, value: Any) -> None:
        if value is None:
            self._write_length(out, None)
            return
        if not isinstance(value, str):
            raise LocalProtocolError(f"string field given {type(value).__name__}")
        raw = value.encode("utf-8")
        self._write_length(out, len(raw))
        out.append(raw)

    def _parse(self, stream: Any, context: Any, path: str) -> Any:
        length = self._parse_length(stream)
        if length < 0:
            return None
        return self._text(stream_read(stream, length, path))


class _Bytes(_LengthPrefixed):
    def __init__(self, nullable: bool, compact: bool) -> None:
        super().__init__(nullable, compact, wide=True)

    def read(self, buf: memoryview, pos: int) -> tuple[Any, int]:
        length, pos = self._read_length(buf, pos)
        if length < 0:
            return None, pos
        end = pos + length
        return bytes(buf[pos:end]), end

    def write(self, out: list, value: Any) -> None:
        if value is None:
            self._write_length(out, None)
            return
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise LocalProtocolError(f"bytes field given {type(value).__name__}")
        self._write_length(out, len(value) if not isinstance(value, memoryview) else value.nbytes)
        out.append(value)

    def _parse(self, stream: Any, context: Any, path: str) -> Any:
        length = self._parse_length(stream)
        if length < 0:
            return None
        return bytes(stream_read(stream, length, path))


class _Records(_Bytes):
    """A records blob: nullable bytes, decoded as a zero-copy memoryview, never parsed here.

    Encoding also takes a *reference* (any object with an int ``length``, e.g. ``messages.RecordsRef``):
    it is put into the chunk list as is, so the caller can ``sendfile`` its bytes in place.
    """

    kind = "records"

    def __init__(self, compact: bool) -> None:
        super().__init__(nullable=True, compact=compact)

    def read(self, buf: memoryview, pos: int) -> tuple[Any, int]:
        length, pos = self._read_length(buf, pos)
        if length < 0:
            return None, pos
        end = pos + length
        return buf[pos:end], end

    def write(self, out: list, value: Any) -> None:
        if value is None or isinstance(value, (bytes, bytearray, memoryview)):
            super().write(out, value)
            return
        length = getattr(value, "length", None)
        if not isinstance(length, int) or length < 0:
            raise LocalProtocolError(f"records field given {type(value).__name__}")
        self._write_length(out, length)
        out.append(value)


def String(nullable: bool = False) -> _String:
    return _String(nullable, compact=False)


def CompactString(nullable: bool = False) -> _String:
    return _String(nullable, compact=True)


def Bytes(nullable: bool = False) -> _Bytes:
    return _Bytes(nullable, compact=False)


def CompactBytes(nullable: bool = False) -> _Bytes:
    return _Bytes(nullable, compact=True)


def Records(compact: bool = False) -> _Records:
    return _Records(compact)


# ---------------------------------------------------------------------------------------------------
# Arrays


class _Array(KafkaPrimitive):
    """``lenient``: a null where the schema says non-nullable reads as an empty array (with a debug log)
    instead of an error. Only for decoding a peer's *answers* (some brokers, Tansu among them, write null
    for an empty array); requests we serve and everything we encode stay strict."""

    def __init__(self, element: KafkaPrimitive, nullable: bool, compact: bool, lenient: bool = False) -> None:
        super().__init__()
        self.element = element
        self.nullable = nullable
        self.compact = compact
        self.lenient = lenient

    def default(self) -> Any:
        return None if self.nullable else []

    def _check_count(self, count: int, available: int) -> int | None:
        if count < -1:
            raise RemoteProtocolError(f"negative array length {count}")
        if count == -1:
            if not self.nullable:
                if self.lenient:
                    _log.debug("peer answered null for a non-nullable array; read as empty")
                    return 0
                raise RemoteProtocolError("non-nullable array encoded as null")
            return None
        # Every element takes at least one byte on the wire (Kafka applies the same rule), so a count
        # above what remains is a lie told before we loop or allocate anything.
        if count > available:
            raise RemoteProtocolError(f"array of {count} elements cannot fit in the {available} bytes remaining")
        return count

    def read(self, buf: memoryview, pos: int) -> tuple[Any, int]:
        if self.compact:
            raw, pos = UnsignedVarint.read(buf, pos)
            count = raw - 1
        else:
            if pos + 4 > len(buf):
                raise RemoteProtocolError(f"truncated array length at byte {pos}")
            count = _I32.unpack_from(buf, pos)[0]
            pos += 4
        count = self._check_count(count, len(buf) - pos)
        if count is None:
            return None, pos
        read = self.element.read
        items: list = []
        append = items.append
        for _ in range(count):
            item, pos = read(buf, pos)
            append(item)
        return items, pos

    def write(self, out: list, value: Any) -> None:
        if value is None:
            if not self.nullable:
                raise LocalProtocolError("non-nullable array given None")
            out.append(b"\x00" if self.compact else b"\xff\xff\xff\xff")
            return
        if isinstance(value, (str, bytes, dict)):
            raise LocalProtocolError(f"array field given {type(value).__name__}")
        out.append(encode_unsigned_varint(len(value) + 1) if self.compact else _I32.pack(len(value)))
        write = self.element.write
        for item in value:
            write(out, item)

    def _parse(self, stream: Any, context: Any, path: str) -> Any:
        if self.compact:
            count = UnsignedVarint._parse(stream, context, path) - 1
        else:
            count = _I32.unpack(_read_exact(stream, 4, "array length"))[0]
        count = self._check_count(count, remaining(stream))
        if count is None:
            return None
        parse = self.element._parse
        return [parse(stream, context, path) for _ in range(count)]


def Array(element: KafkaPrimitive, nullable: bool = False) -> _Array:
    return _Array(element, nullable, compact=False)


def CompactArray(element: KafkaPrimitive, nullable: bool = False) -> _Array:
    return _Array(element, nullable, compact=True)


class NullableStruct(KafkaPrimitive):
    """A struct-typed field that may be null: an int8 presence marker (-1 null, 1 present), then the struct."""

    def __init__(self, inner: KafkaPrimitive) -> None:
        super().__init__()
        self.inner = inner

    def default(self) -> Any:
        return None

    def read(self, buf: memoryview, pos: int) -> tuple[Any, int]:
        marker, pos = Int8.read(buf, pos)
        if marker < 0:
            return None, pos
        return self.inner.read(buf, pos)

    def write(self, out: list, value: Any) -> None:
        if value is None:
            out.append(b"\xff")
        else:
            out.append(b"\x01")
            self.inner.write(out, value)

    def _parse(self, stream: Any, context: Any, path: str) -> Any:
        if Int8._parse(stream, context, path) < 0:
            return None
        return self.inner._parse(stream, context, path)


class TaggedFields(KafkaPrimitive):
    """A raw tagged-field section: a list of (tag, payload bytes), payloads not interpreted.

    Message structs interpret their known tags themselves (see ``schema.KafkaStruct``); this construct
    is the building block and what request/response headers use.
    """

    def default(self) -> Any:
        return []

    def read(self, buf: memoryview, pos: int) -> tuple[Any, int]:
        count, pos = UnsignedVarint.read(buf, pos)
        if count > len(buf) - pos:
            raise RemoteProtocolError(f"{count} tagged fields cannot fit in {len(buf) - pos} bytes")
        fields = []
        for _ in range(count):
            tag, pos = UnsignedVarint.read(buf, pos)
            size, pos = UnsignedVarint.read(buf, pos)
            end = pos + size
            if end > len(buf):
                raise RemoteProtocolError(f"tagged field {tag} of {size} bytes runs past the end")
            fields.append((tag, bytes(buf[pos:end])))
            pos = end
        return fields, pos

    def write(self, out: list, value: Any) -> None:
        out.append(encode_unsigned_varint(len(value)))
        for tag, payload in sorted(value, key=lambda item: item[0]):
            out.append(encode_unsigned_varint(tag))
            out.append(encode_unsigned_varint(len(payload)))
            out.append(bytes(payload))

    def _parse(self, stream: Any, context: Any, path: str) -> Any:
        count = UnsignedVarint._parse(stream, context, path)
        ensure_available(count, remaining(stream), "tagged fields")
        fields = []
        for _ in range(count):
            tag = UnsignedVarint._parse(stream, context, path)
            size = UnsignedVarint._parse(stream, context, path)
            fields.append((tag, _read_exact(stream, size, f"tagged field {tag}")))
        return fields


TaggedFieldSection = TaggedFields()
