"""CDR (XCDR1, final structs) serialisation of ROS 2 messages, as rmw and rosbag2 put them on the wire.

A message class declares each field's ROS type (``float64[]``, ``string``, ``uint8[]``, ``float64[9]``, a
nested message class ...). :func:`encode` and :func:`decode` compile one function per class on first use.
Representation: primitive scalars are Python numbers, ``uint8[]``/``byte[]`` are ``bytes``, other numeric
arrays and sequences are 1-D numpy arrays, ``string[]`` is a list of str, nested messages are instances.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Callable
from typing import Any, Literal, TypeVar

import numpy as np

# ROS primitive -> (struct format char, numpy dtype)
PRIMITIVES: dict[str, tuple[str, str]] = {
    "bool": ("?", "?"),
    "byte": ("B", "u1"),
    "char": ("B", "u1"),
    "int8": ("b", "i1"),
    "uint8": ("B", "u1"),
    "int16": ("h", "i2"),
    "uint16": ("H", "u2"),
    "int32": ("i", "i4"),
    "uint32": ("I", "u4"),
    "int64": ("q", "i8"),
    "uint64": ("Q", "u8"),
    "float32": ("f", "f4"),
    "float64": ("d", "f8"),
}
_BYTES_TYPES = ("uint8", "byte", "char")
HEADER_LE = b"\x00\x01\x00\x00"  # CDR_LE encapsulation
HEADER_BE = b"\x00\x00\x00\x00"  # CDR_BE

M = TypeVar("M")


class CdrError(ValueError):
    """A message could not be encoded or decoded."""


@dataclasses.dataclass(frozen=True)
class FieldType:
    """Parsed ROS field type: ``base`` (primitive name, ``string`` or a message class), array ``length``
    (None = scalar, -1 = unbounded sequence, n = fixed array)."""

    base: Any
    length: int | None = None

    @property
    def is_message(self) -> bool:
        return not isinstance(self.base, str)


def parse_field_type(spec: Any) -> FieldType:
    """``"float64[]"`` -> FieldType("float64", -1); ``"float64[9]"`` -> (…, 9); a class -> nested message.
    A one-element list ``[Cls]`` is a sequence of messages."""
    if isinstance(spec, list):
        return FieldType(spec[0], -1)
    if not isinstance(spec, str):
        return FieldType(spec, None)
    base, _, rest = spec.partition("[")
    if base not in PRIMITIVES and base != "string":
        raise CdrError(f"unknown ROS field type {spec!r}")
    if not rest:
        return FieldType(base, None)
    n = rest.rstrip("]")
    return FieldType(base, -1 if n == "" else int(n))


def ros_fields(cls: type) -> list[tuple[str, FieldType]]:
    """The (name, type) of each wire field of a message class, in order."""
    key = "_ros_fields_cache"
    cached = cls.__dict__.get(key)
    if cached is None:
        cached = [(f.name, parse_field_type(f.metadata["ros"])) for f in dataclasses.fields(cls) if "ros" in f.metadata]
        setattr(cls, key, cached)
    return cached


def default_value(ftype: FieldType) -> Any:
    """The zero value ROS gives a field of this type."""
    if ftype.is_message:
        return [] if ftype.length == -1 else ftype.base()
    if ftype.length is None:
        if ftype.base in ("float32", "float64"):
            return 0.0  # a float, as decode gives: 0 and 0.0 print and serialise (JSON, YAML) differently
        return "" if ftype.base == "string" else (False if ftype.base == "bool" else 0)
    if ftype.base == "string":
        return [""] * ftype.length if ftype.length > 0 else []
    if ftype.base in _BYTES_TYPES and ftype.length == -1:
        return b""
    return np.zeros(max(ftype.length, 0), dtype=PRIMITIVES[ftype.base][1])


def field(ros_type: Any, **kwargs: Any) -> Any:
    """A dataclass field carrying its ROS type; the default is ROS's zero value."""
    ftype = parse_field_type(ros_type)
    return dataclasses.field(default_factory=lambda: default_value(ftype), metadata={"ros": ros_type}, **kwargs)


# --- encoding ---------------------------------------------------------------------------------------------------

Encoder = Callable[[Any, bytearray], None]


def _pad(buf: bytearray, size: int) -> None:
    # alignment is relative to the end of the 4-byte encapsulation header
    rem = (len(buf) - 4) % size
    if rem:
        buf.extend(b"\0" * (size - rem))


def _encode_string(s: str, buf: bytearray) -> None:
    _pad(buf, 4)
    b = s.encode()
    buf.extend(struct.pack("<I", len(b) + 1))
    buf.extend(b)
    buf.append(0)


def _field_encoder(name: str, ft: FieldType) -> Encoder:
    if ft.is_message:
        sub = _encoder(ft.base)
        if ft.length is None:
            return lambda m, buf: sub(getattr(m, name), buf)

        def enc_msgs(m: Any, buf: bytearray) -> None:
            items = getattr(m, name)
            _pad(buf, 4)
            buf.extend(struct.pack("<I", len(items)))
            for item in items:
                sub(item, buf)

        return enc_msgs
    if ft.base == "string":
        if ft.length is None:
            return lambda m, buf: _encode_string(getattr(m, name), buf)

        def enc_strings(m: Any, buf: bytearray) -> None:
            items = getattr(m, name)
            _check_len(name, ft, len(items))
            if ft.length == -1:
                _pad(buf, 4)
                buf.extend(struct.pack("<I", len(items)))
            for s in items:
                _encode_string(s, buf)

        return enc_strings
    fmt, dtype = PRIMITIVES[ft.base]
    size = struct.calcsize(fmt)
    if ft.length is None:
        packer = struct.Struct("<" + fmt).pack

        def enc_scalar(m: Any, buf: bytearray) -> None:
            _pad(buf, size)
            buf.extend(packer(getattr(m, name)))

        return enc_scalar
    le = np.dtype(dtype).newbyteorder("<")

    def enc_array(m: Any, buf: bytearray) -> None:
        v = getattr(m, name)
        if isinstance(v, (bytes, bytearray, memoryview)) and size == 1:
            data, n = v, len(v)
        else:
            arr = np.asarray(v)
            if arr.ndim != 1 and not (size == 1 and arr.dtype == np.uint8):
                raise CdrError(f"field {name!r} ({ft.base}[]) needs a 1-D array, got shape {arr.shape}")
            arr = np.ascontiguousarray(arr.reshape(-1), dtype=le)
            data, n = arr.data, arr.size
        _check_len(name, ft, n)
        if ft.length == -1:
            _pad(buf, 4)
            buf.extend(struct.pack("<I", n))
        if n:
            _pad(buf, size)
            buf.extend(data)

    return enc_array


def _check_len(name: str, ft: FieldType, n: int) -> None:
    if ft.length not in (-1, None) and n != ft.length:
        raise CdrError(f"field {name!r} is {ft.base}[{ft.length}] but got {n} elements")


def _encoder(cls: type) -> Encoder:
    key = "_cdr_encoder"
    enc = cls.__dict__.get(key)
    if enc is None:
        parts = [_field_encoder(n, ft) for n, ft in ros_fields(cls)]

        def enc(m: Any, buf: bytearray) -> None:
            for p in parts:
                p(m, buf)

        setattr(cls, key, enc)
    return enc


def encode(msg: Any) -> bytes:
    """Serialise a message to CDR bytes, with the 4-byte little-endian encapsulation header."""
    buf = bytearray(HEADER_LE)
    try:
        _encoder(type(msg))(msg, buf)
    except (struct.error, TypeError, OverflowError, AttributeError) as e:
        raise CdrError(f"cannot encode {type(msg).__name__}: {e}") from e
    return bytes(buf)


# --- decoding ---------------------------------------------------------------------------------------------------

Decoder = Callable[[memoryview, int], tuple[Any, int]]
Endian = Literal["<", ">"]  # struct's and numpy's little / big byte order


def _align(pos: int, size: int) -> int:
    rem = (pos - 4) % size
    return pos + (size - rem if rem else 0)


def _field_decoder(ft: FieldType, endian: Endian) -> Decoder:
    u32 = struct.Struct(endian + "I").unpack_from

    def read_len(mv: memoryview, pos: int) -> tuple[int, int]:
        """A sequence's element count (uint32, 4-aligned) and the position after it."""
        pos = _align(pos, 4)
        return u32(mv, pos)[0], pos + 4

    def read_string(mv: memoryview, pos: int) -> tuple[str, int]:
        pos = _align(pos, 4)
        (n,) = u32(mv, pos)
        pos += 4
        if n == 0:  # some writers send a zero length for an empty string
            return "", pos
        if pos + n > len(mv):  # a slice past the end would silently yield a shorter string
            raise CdrError(f"truncated message: a string of {n} bytes at offset {pos} runs past the end ({len(mv)})")
        return bytes(mv[pos : pos + n - 1]).decode(), pos + n

    if ft.is_message:
        sub = _decoder(ft.base, endian)
        if ft.length is None:
            return sub

        def dec_msgs(mv: memoryview, pos: int) -> tuple[Any, int]:
            n, pos = read_len(mv, pos)
            items = []
            for _ in range(n):
                item, pos = sub(mv, pos)
                items.append(item)
            return items, pos

        return dec_msgs
    length = ft.length
    if ft.base == "string":
        if length is None:
            return read_string

        def dec_strings(mv: memoryview, pos: int) -> tuple[list[str], int]:
            n, pos = read_len(mv, pos) if length == -1 else (length, pos)
            items = []
            for _ in range(n):
                s, pos = read_string(mv, pos)
                items.append(s)
            return items, pos

        return dec_strings
    fmt, dtype = PRIMITIVES[ft.base]
    size = struct.calcsize(fmt)
    if length is None:
        unpack = struct.Struct(endian + fmt).unpack_from

        def dec_scalar(mv: memoryview, pos: int) -> tuple[Any, int]:
            pos = _align(pos, size)
            return unpack(mv, pos)[0], pos + size

        return dec_scalar
    as_bytes = ft.base in _BYTES_TYPES and length == -1
    npdtype = np.dtype(dtype).newbyteorder(endian)

    def dec_array(mv: memoryview, pos: int) -> tuple[Any, int]:
        n, pos = read_len(mv, pos) if length == -1 else (length, pos)
        if n:
            pos = _align(pos, size)
        end = pos + n * size
        if end > len(mv):
            raise CdrError(f"truncated message: a {ft.base} array of {n} needs {end} bytes, have {len(mv)}")
        if as_bytes:
            return bytes(mv[pos:end]), end
        return np.frombuffer(mv[pos:end], dtype=npdtype).astype(npdtype.newbyteorder("=")), end

    return dec_array


def _decoder(cls: type, endian: Endian) -> Decoder:
    key = "_cdr_decoder_" + ("le" if endian == "<" else "be")
    dec = cls.__dict__.get(key)
    if dec is None:
        parts = [(n, _field_decoder(ft, endian)) for n, ft in ros_fields(cls)]

        def dec(mv: memoryview, pos: int) -> tuple[Any, int]:
            values = {}
            for n, p in parts:
                values[n], pos = p(mv, pos)
            return cls(**values), pos

        setattr(cls, key, dec)
    return dec


def decode(cls: type[M], data: bytes | bytearray | memoryview) -> M:
    """Deserialise CDR bytes (with encapsulation header, either endianness) into an instance of ``cls``."""
    mv = memoryview(data).cast("B")
    if len(mv) < 4 or mv[0] != 0 or mv[1] not in (0, 1):
        raise CdrError(
            f"not a plain CDR {cls.__name__} message (header {bytes(mv[:4]).hex()}); "
            "XCDR2/PL_CDR payloads are not supported: ROS 2 types are final XCDR1 structs"
        )
    try:
        msg, _ = _decoder(cls, "<" if mv[1] == 1 else ">")(mv, 4)
    except (struct.error, UnicodeDecodeError, ValueError) as e:
        if isinstance(e, CdrError):
            raise
        raise CdrError(f"corrupt or truncated {cls.__name__} message ({len(mv)} bytes): {e}") from e
    return msg
