"""Serialize an ONNX model whose initializers' bytes stay where they are (a mapped file, a fix's
new values), writing them straight to the output: the counterpart of ``protowire``.

Embedding the bytes in the proto first and serializing would hold the weights twice more (the
proto's copy and the serialized string): 4.9x the weights in peak memory for a 126 MB model
with external data written elsewhere. protobuf writes a message's fields in field-number order,
so a message is the concatenation of its fields below a number, that field, and those above:
the stream below is byte for byte what ``SerializeToString`` gives for the embedded model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, BinaryIO

from google.protobuf.message import EncodeError

from fhe_lint.io.onnx_proto import ModelProto, TensorProto
from fhe_lint.io.tensor_data import TensorData, external_tensors, is_external

_MODEL_GRAPH, _GRAPH_INITIALIZER, _TENSOR_RAW_DATA = 7, 5, 9
_LENGTH = 2
_CHUNK = 16 << 20


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _key(number: int) -> bytes:
    return _varint(number << 3 | _LENGTH)


class _Unusual(Exception):
    """A message this writer does not split exactly (unknown fields): it is serialized whole."""


def _split(message: Any, number: int) -> tuple[bytes, bytes]:
    """The serialized fields of ``message`` (field ``number`` unset) numbered below ``number``
    and above it."""
    parts = []
    for keep in (lambda n: n < number, lambda n: n > number):
        part = type(message)()
        part.CopyFrom(message)
        for field, _ in part.ListFields():
            if not keep(field.number):
                part.ClearField(field.name)
        parts.append(part.SerializeToString())
    if len(parts[0]) + len(parts[1]) != message.ByteSize():  # unknown fields went to both halves
        raise _Unusual
    return parts[0], parts[1]


def streamed(model: ModelProto, raw: Callable[[TensorProto], memoryview | None],
             written: Callable[[memoryview], None]) -> tuple[int, Callable[[BinaryIO], None]] | None:
    """The size of ``model`` serialized with each main-graph initializer for which ``raw`` gives
    bytes holding them as ``raw_data`` (its external reference dropped), and a writer of those
    bytes; ``written`` is told each chunk of tensor bytes once written (to hand pages back).
    None for a model with unknown fields, which only protobuf itself serializes exactly."""
    try:
        pieces = _pieces(model, raw)
    except _Unusual:
        return None

    def write(f: BinaryIO) -> None:
        for p in pieces:
            if isinstance(p, bytes):
                f.write(p)
                continue
            for start in range(0, len(p), _CHUNK):
                f.write(p[start:start + _CHUNK])
                written(p[start:start + _CHUNK])

    return sum(len(p) for p in pieces), write


def _pieces(model: ModelProto, raw: Callable[[TensorProto], memoryview | None]) -> list[bytes | memoryview]:
    graph = model.graph
    pieces: list[bytes | memoryview] = []
    for t in graph.initializer:
        data = raw(t)
        if data is None:
            pieces.append(_key(_GRAPH_INITIALIZER) + _varint(t.ByteSize()) + t.SerializeToString())
            continue
        plain = TensorProto()
        plain.CopyFrom(t)
        del plain.external_data[:]
        plain.ClearField("data_location")
        plain.ClearField("raw_data")
        below, above = _split(plain, _TENSOR_RAW_DATA)
        head = _key(_TENSOR_RAW_DATA) + _varint(len(data))
        size = len(below) + len(head) + len(data) + len(above)
        pieces += [_key(_GRAPH_INITIALIZER) + _varint(size) + below + head, data, above]
    bare = type(graph)()
    bare.CopyFrom(graph)
    bare.ClearField("initializer")
    graph_below, graph_above = _split(bare, _GRAPH_INITIALIZER)
    pieces = [graph_below, *pieces, graph_above]
    graph_size = sum(len(p) for p in pieces)
    shell = ModelProto()
    shell.CopyFrom(model)
    shell.ClearField("graph")
    model_below, model_above = _split(shell, _MODEL_GRAPH)
    return [model_below, _key(_MODEL_GRAPH) + _varint(graph_size), *pieces, model_above]


def serialized(model: ModelProto, data: TensorData, embed: Callable[[TensorProto], bool], limit: int
               ) -> tuple[int, bytes | Callable[[BinaryIO], None]]:
    """The size of ``model`` serialized with the external tensors ``embed`` picks embedded, and
    its bytes or a writer of them (``limit`` as the size when protobuf refuses the message). The
    main graph's initializers stream from where they are: the proto would hold a second copy of
    every weight and the serialized string a third."""
    for t in external_tensors(model, main_initializers=False):  # few and small: embedded here
        if embed(t):
            t.CopyFrom(data.embedded(t))
    stream = streamed(model, lambda t: data.raw(t) if is_external(t) and embed(t) else None, data.release_bytes)
    if stream is not None:
        return stream
    for t in external_tensors(model):  # unknown fields: protobuf serializes the embedded model
        if embed(t):
            t.CopyFrom(data.embedded(t))
    try:
        whole = model.SerializeToString()
    except EncodeError:  # what protobuf says of a message past 2 GiB
        return limit, b""
    return len(whole), whole
