"""The records of stage files as JSON, encoded and decoded by the records' own types.

A staged scan hands typed facts from one machine to another through files in a shared
directory. They are JSON, never pickle: decoding a file builds only the record types
the reader asks for, field by field from their annotations (frozen dataclasses, string
enums, tuples, `X | None`, times, bytes as base64 and the plain scalars), so a file
someone else could write is data, never code. A value that does not fit its type
raises `Undecodable`, with the path to it.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import functools
import types
import typing
from datetime import datetime
from enum import Enum
from typing import TypeVar

_T = TypeVar("_T")


class Undecodable(ValueError):
    """A stage record that does not fit its type (the message says where)."""


def encode(value: object) -> object:
    """`value` as plain JSON values: a dataclass as an object of its fields."""
    if isinstance(value, Enum):
        return value.value
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, tuple | list | frozenset):
        return [encode(item) for item in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            item.name: encode(getattr(value, item.name))
            for item in dataclasses.fields(value)
            if item.init
        }
    raise TypeError(f"no stage encoding for {type(value).__name__}")


def decode(kind: type[_T], data: object) -> _T:
    """The value of type `kind` that `encode` wrote as `data`; `Undecodable` otherwise."""
    return typing.cast(_T, _decode(kind, data, "$"))


@functools.cache
def _hints(kind: type) -> dict[str, object]:
    return typing.get_type_hints(kind)


def _decode(kind: object, data: object, path: str) -> object:
    origin = typing.get_origin(kind)
    if origin is typing.Union or origin is types.UnionType:
        return _union(typing.get_args(kind), data, path)
    if origin is tuple or origin is frozenset:
        return _sequence(origin, typing.get_args(kind), data, path)
    if not isinstance(kind, type):
        raise Undecodable(f"{path}: no stage decoding for {kind!r}")
    if issubclass(kind, Enum):
        try:
            return kind(data)
        except ValueError:
            raise Undecodable(f"{path}: {data!r} is no {kind.__name__}") from None
    if dataclasses.is_dataclass(kind):
        return _record(kind, data, path)
    return _scalar(kind, data, path)


def _union(arms: tuple[object, ...], data: object, path: str) -> object:
    if data is None and type(None) in arms:
        return None
    problems = []
    for arm in arms:
        if arm is type(None):
            continue
        try:
            return _decode(arm, data, path)
        except Undecodable as exc:
            problems.append(str(exc))
    raise Undecodable("; ".join(problems) or f"{path}: null where a value belongs")


def _sequence(origin: object, args: tuple[object, ...], data: object, path: str) -> object:
    if not isinstance(data, list):
        raise Undecodable(f"{path}: not a list")
    if origin is frozenset:
        return frozenset(_decode(args[0], item, f"{path}[{i}]") for i, item in enumerate(data))
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(_decode(args[0], item, f"{path}[{i}]") for i, item in enumerate(data))
    if len(args) != len(data):
        raise Undecodable(f"{path}: {len(data)} items, not {len(args)}")
    return tuple(
        _decode(arg, item, f"{path}[{i}]")
        for i, (arg, item) in enumerate(zip(args, data, strict=True))
    )


def _scalar(kind: type, data: object, path: str) -> object:
    if kind is datetime:
        if not isinstance(data, str):
            raise Undecodable(f"{path}: not a time")
        try:
            return datetime.fromisoformat(data)
        except ValueError:
            raise Undecodable(f"{path}: {data!r} is not a time") from None
    if kind is bytes:
        if not isinstance(data, str):
            raise Undecodable(f"{path}: not base64")
        try:
            return base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise Undecodable(f"{path}: not base64") from None
    words = {bool: "a boolean", str: "a string", int: "an integer"}
    if kind in words:
        if type(data) is not kind:
            raise Undecodable(f"{path}: not {words[kind]}")
        return data
    if kind is float:
        if not isinstance(data, int | float) or isinstance(data, bool):
            raise Undecodable(f"{path}: not a number")
        return float(data)
    raise Undecodable(f"{path}: no stage decoding for {kind.__name__}")


def _record(kind: type, data: object, path: str) -> object:
    if not isinstance(data, dict):
        raise Undecodable(f"{path}: not an object ({kind.__name__})")
    hints = _hints(kind)
    fields = {item.name: item for item in dataclasses.fields(kind) if item.init}
    unknown = set(data) - set(fields)
    if unknown:
        raise Undecodable(f"{path}: unknown fields {sorted(map(str, unknown))} of {kind.__name__}")
    values = {}
    for name, item in fields.items():
        if name in data:
            values[name] = _decode(hints[name], data[name], f"{path}.{name}")
        elif item.default is dataclasses.MISSING and item.default_factory is dataclasses.MISSING:
            raise Undecodable(f"{path}: {kind.__name__} without {name}")
    try:
        return kind(**values)
    except (TypeError, ValueError) as exc:
        raise Undecodable(f"{path}: {kind.__name__}: {exc}") from None
