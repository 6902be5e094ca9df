"""Parse an ONNX model without copying its weights: the large ``raw_data`` of each initializer is
left in the file and the tensor refers to it as ONNX external data (location, offset, length).

The protobuf wire format is walked only along ModelProto.graph -> GraphProto.initializer ->
TensorProto.raw_data; every other byte goes through protobuf's own parser. Concatenated message
bytes merge exactly as one message would parse (protobuf's merge rule), so the result equals
``ModelProto.ParseFromString`` with those tensors' data moved out. Anything unusual (groups,
truncation, a repeated raw_data, a tensor already external) returns None: the caller then parses
the bytes whole and gets protobuf's own errors.
"""

from __future__ import annotations

from collections.abc import Iterator

from fhe_lint.io.onnx_proto import ModelProto, TensorProto

_MODEL_GRAPH, _GRAPH_INITIALIZER = 7, 5
_TENSOR_RAW_DATA, _TENSOR_EXTERNAL_DATA, _TENSOR_DATA_LOCATION = 9, 13, 14
_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5


class _Unusual(Exception):
    """Bytes this walker does not split; protobuf's parser judges them instead."""


def _varint(buf: memoryview, i: int, end: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if i >= end or shift > 63:
            raise _Unusual
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i
        shift += 7


def _fields(buf: memoryview, start: int, end: int) -> Iterator[tuple[int, int, int, int, int]]:
    """(field number, wire type, field start, value start, field end) of each field in buf[start:end]."""
    i = start
    while i < end:
        key, value = _varint(buf, i, end)
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            _, stop = _varint(buf, value, end)
        elif wire == _LENGTH:
            size, value = _varint(buf, value, end)
            stop = value + size
        elif wire in (_FIXED64, _FIXED32):
            stop = value + (8 if wire == _FIXED64 else 4)
        else:
            raise _Unusual  # groups: deprecated, never written by onnx
        if stop > end or number == 0:
            raise _Unusual
        yield number, wire, i, value, stop
        i = stop


def _tensor(buf: memoryview, start: int, end: int, location: str, threshold: int) -> TensorProto:
    raw = [(s, v, e) for n, w, s, v, e in _fields(buf, start, end) if n == _TENSOR_RAW_DATA and w == _LENGTH]
    external = any(n in (_TENSOR_EXTERNAL_DATA, _TENSOR_DATA_LOCATION) for n, *_ in _fields(buf, start, end))
    tensor = TensorProto()
    if len(raw) != 1 or external or raw[0][2] - raw[0][1] < threshold:
        tensor.MergeFromString(bytes(buf[start:end]))
        return tensor
    field_start, value, stop = raw[0]
    tensor.MergeFromString(bytes(buf[start:field_start]) + bytes(buf[stop:end]))
    tensor.data_location = TensorProto.EXTERNAL
    for key, v in (("location", location), ("offset", str(value)), ("length", str(stop - value))):
        tensor.external_data.add(key=key, value=v)
    return tensor


def parse_leaving_weights(buf: memoryview, location: str, threshold: int) -> ModelProto | None:
    """The model serialized in ``buf`` (the whole file named ``location``), each initializer whose
    raw_data has at least ``threshold`` bytes referring to those bytes in place; None when the
    bytes must be parsed whole. Raises protobuf's DecodeError for bytes it cannot parse."""
    try:
        top, graphs = [], []
        for number, wire, start, value, stop in _fields(buf, 0, len(buf)):
            (graphs if number == _MODEL_GRAPH and wire == _LENGTH else top).append((start, value, stop))
        model = ModelProto()
        model.MergeFromString(b"".join(bytes(buf[s:e]) for s, _, e in top))
        for _, value, stop in graphs:
            rest, tensors = [], []
            for number, wire, start, v, end in _fields(buf, value, stop):
                (tensors if number == _GRAPH_INITIALIZER and wire == _LENGTH else rest).append((start, v, end))
            model.graph.MergeFromString(b"".join(bytes(buf[s:e]) for s, _, e in rest))
            for _, v, end in tensors:
                model.graph.initializer.append(_tensor(buf, v, end, location, threshold))
    except _Unusual:
        return None
    return model
