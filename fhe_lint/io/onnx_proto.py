"""onnx's protobuf messages, checker and tensor decoding without ``import onnx``.

``import onnx`` costs 0.5-1.6 s before any work, nearly all of it ml_dtypes (imported by
onnx.helper for its float8 tables); a pre-commit hook pays it on every commit (measured here: a
tiny model's lint took 0.95 s against 0.20 s for ``python -c "import numpy"``). The lint path needs
only the generated message classes (``onnx/onnx_ml_pb2.py``, pure protobuf), the C++ checker and
shape inference (``onnx_cpp2py_export``) and the decoding of plain tensors and attributes. The
first two are loaded from the installed onnx package by file, the messages under a private module name (protobuf
keeps one class per message type, so onnx's own module holds the same classes) and the checker
under its own (onnx reuses it); if onnx is already imported, or its layout ever differs, the
ordinary import is used: the same objects, only slower. Element types and attribute kinds this module does
not decode itself (bfloat16, float8, packed int2/int4, graphs) go to onnx's own helpers.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np


def _load(name: str, pattern: str, as_name: str) -> ModuleType:
    """``onnx.<name>``; while onnx itself is not imported, loaded from the file matching
    ``pattern`` in onnx's package directory as module ``as_name``."""
    if "onnx" in sys.modules or as_name in sys.modules:
        return sys.modules.get(as_name) or importlib.import_module(f"onnx.{name}")
    spec = importlib.util.find_spec("onnx")
    root = Path(spec.origin).parent if spec is not None and spec.origin else None
    found = sorted(root.glob(pattern)) if root is not None else []
    file_spec = importlib.util.spec_from_file_location(as_name, found[0]) if found else None
    if file_spec is None or file_spec.loader is None:
        return importlib.import_module(f"onnx.{name}")
    module = importlib.util.module_from_spec(file_spec)
    sys.modules[as_name] = module
    try:
        file_spec.loader.exec_module(module)
    except Exception:  # noqa: BLE001 - any surprise: the ordinary import
        del sys.modules[as_name]
        return importlib.import_module(f"onnx.{name}")
    return module


_pb2 = _load("onnx_ml_pb2", "onnx_ml_pb2.py", "fhe_lint._onnx_ml_pb2")
ModelProto = _pb2.ModelProto
NodeProto = _pb2.NodeProto
TensorProto = _pb2.TensorProto
AttributeProto = _pb2.AttributeProto


# The native module must keep its own name: a second copy would register its types twice and abort.
_C = _load("onnx_cpp2py_export", "onnx_cpp2py_export*.so", "onnx.onnx_cpp2py_export")
ValidationError: type[Exception] = _C.checker.ValidationError


def check_model(data: bytes) -> None:
    """``onnx.checker.check_model`` on serialized bytes (raises :data:`ValidationError`)."""
    try:
        _C.checker.check_model(data, False, False, False)  # full_check, skip_opset_compat, custom domains
    except TypeError:  # another onnx version's signature: its own Python wrapper knows it
        import onnx.checker

        onnx.checker.check_model(data)


def infer_shapes(model: Any) -> Any:
    """``onnx.shape_inference.infer_shapes(model)`` through the C++ module (``import onnx`` would
    cost a CNN's lint more than the lint itself)."""
    try:
        inferred = _C.shape_inference.infer_shapes(model.SerializeToString(), False, False, False)
    except TypeError:  # another onnx version's signature: its own Python wrapper knows it
        from onnx import shape_inference

        return shape_inference.infer_shapes(model)
    out = ModelProto()
    out.ParseFromString(inferred)
    return out


# Element types held one numpy item per element, with their numpy type.
PLAIN_DTYPES: dict[int, np.dtype] = {
    TensorProto.FLOAT: np.dtype(np.float32), TensorProto.DOUBLE: np.dtype(np.float64),
    TensorProto.FLOAT16: np.dtype(np.float16), TensorProto.INT8: np.dtype(np.int8),
    TensorProto.UINT8: np.dtype(np.uint8), TensorProto.INT16: np.dtype(np.int16),
    TensorProto.UINT16: np.dtype(np.uint16), TensorProto.INT32: np.dtype(np.int32),
    TensorProto.UINT32: np.dtype(np.uint32), TensorProto.INT64: np.dtype(np.int64),
    TensorProto.UINT64: np.dtype(np.uint64), TensorProto.BOOL: np.dtype(np.bool_),
}
# Which repeated field holds each plain type when it is not in raw_data (onnx.proto's comments).
_FIELD = {
    TensorProto.FLOAT: "float_data", TensorProto.DOUBLE: "double_data", TensorProto.INT64: "int64_data",
    TensorProto.UINT32: "uint64_data", TensorProto.UINT64: "uint64_data",
    **{t: "int32_data" for t in (TensorProto.INT8, TensorProto.UINT8, TensorProto.INT16, TensorProto.UINT16,
                                 TensorProto.INT32, TensorProto.BOOL, TensorProto.FLOAT16)},
}


def to_array(tensor: Any) -> np.ndarray:
    """A tensor's values, as ``onnx.numpy_helper.to_array`` gives them, for data held in the proto
    (external tensors are read through ``tensor_data``)."""
    kind = tensor.data_type
    if kind not in PLAIN_DTYPES or tensor.HasField("segment"):
        from onnx import numpy_helper

        return numpy_helper.to_array(tensor)
    dtype, shape = PLAIN_DTYPES[kind], tuple(tensor.dims)
    if tensor.HasField("raw_data"):
        values = np.frombuffer(tensor.raw_data, dtype=dtype.newbyteorder("<"))
        if values.size != int(np.prod(shape, dtype=np.int64)):
            raise ValueError(f"{len(tensor.raw_data)} bytes of raw_data for shape {list(shape)} of {dtype}")
        return values.astype(dtype).reshape(shape)
    field = getattr(tensor, _FIELD[kind])
    if kind == TensorProto.FLOAT16:  # stored as the bits of each half, one per int32
        values = np.array(field, dtype=np.uint16).view(np.float16)
    else:
        values = np.array(field, dtype=dtype)
    return values.reshape(shape)


def from_array(values: np.ndarray, data_type: int, name: str) -> Any:
    """A tensor of element type ``data_type`` holding ``values`` (``onnx.numpy_helper.from_array``
    of the values cast to that type; packed and exotic types go through onnx itself)."""
    if data_type not in PLAIN_DTYPES:
        from onnx import helper, numpy_helper

        return numpy_helper.from_array(values.astype(helper.tensor_dtype_to_np_dtype(data_type), copy=False), name)
    t = TensorProto(name=name, data_type=data_type, dims=values.shape)
    t.raw_data = np.ascontiguousarray(values, dtype=PLAIN_DTYPES[data_type].newbyteorder("<")).tobytes()
    return t


def attribute_value(a: Any) -> Any:
    """An attribute's value as ``onnx.helper.get_attribute_value`` gives it, except that strings
    are decoded (UTF-8) once here, so no caller compares bytes with str."""
    kinds = AttributeProto
    if a.type == kinds.FLOAT:
        return a.f
    if a.type == kinds.INT:
        return a.i
    if a.type == kinds.STRING:
        return a.s.decode("utf-8")
    if a.type == kinds.FLOATS:
        return list(a.floats)
    if a.type == kinds.INTS:
        return list(a.ints)
    if a.type == kinds.STRINGS:
        return [s.decode("utf-8") for s in a.strings]
    if a.type == kinds.TENSOR:
        return a.t
    from onnx import helper

    return helper.get_attribute_value(a)


def all_tensors(model: Any, main_initializers: bool = True) -> Iterator[Any]:
    """Every tensor of ``model``: initializers and attribute tensors, subgraphs included (the main
    graph's initializers unless told not to)."""
    graphs, main = [model.graph], True
    while graphs:
        g = graphs.pop()
        if main_initializers or not main:
            yield from g.initializer
        main = False
        for node in g.node:
            for a in node.attribute:
                if a.HasField("t"):
                    yield a.t
                yield from a.tensors
                if a.HasField("g"):
                    graphs.append(a.g)
                graphs.extend(a.graphs)
