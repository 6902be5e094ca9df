"""Real quantized models from onnxruntime's own quantizers (``quantize_static`` in QDQ and
QOperator formats, ``quantize_dynamic``), built from small float models with a symbolic batch
dimension, as exporters write them. Used by the tests of what fhe-lint reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _float_model(nodes, inputs, outputs, inits, opset: int = 17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def cnn(rng: np.random.Generator) -> tuple[onnx.ModelProto, str, tuple[int, ...]]:
    """Conv -> Relu -> Conv(stride 2) -> Relu -> GlobalAveragePool (7x7) -> Flatten -> Gemm."""
    inits = {
        "w1": rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32), "b1": rng.normal(0, 0.1, 8).astype(np.float32),
        "w2": rng.normal(0, 0.2, (16, 8, 3, 3)).astype(np.float32), "b2": rng.normal(0, 0.1, 16).astype(np.float32),
        "w3": rng.normal(0, 0.3, (10, 16)).astype(np.float32), "b3": rng.normal(0, 0.1, 10).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "w3", "b3"], ["y"], name="fc", transB=1),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 14, 14])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])
    return _float_model(nodes, [x], [y], inits), "x", (3, 14, 14)


def attention(rng: np.random.Generator) -> tuple[onnx.ModelProto, str, tuple[int, ...]]:
    """q = x Wq, k = x Wk, scores = q k^T: a MatMul of two run-time tensors with K = 32."""
    inits = {"wq": rng.normal(0, 0.2, (16, 32)).astype(np.float32), "wk": rng.normal(0, 0.2, (16, 32)).astype(np.float32)}
    nodes = [
        helper.make_node("MatMul", ["x", "wq"], ["q"], name="q_proj"),
        helper.make_node("MatMul", ["x", "wk"], ["k"], name="k_proj"),
        helper.make_node("Transpose", ["k"], ["kt"], name="k_t", perm=[0, 2, 1]),
        helper.make_node("MatMul", ["q", "kt"], ["y"], name="scores"),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 16])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 4])
    return _float_model(nodes, [x], [y], inits), "x", (4, 16)


def quantized(tmp: Path, name: str, build, how: str, seed: int = 0) -> Path:
    """``build``'s float model quantized by onnxruntime: ``qdq`` or ``qoperator`` (static, on 16
    random calibration inputs), or ``dynamic``."""
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic,
                                          quantize_static)

    rng = np.random.default_rng(seed)
    model, input_name, shape = build(rng)
    src, dst = tmp / f"{name}.float.onnx", tmp / f"{name}.{how}.onnx"
    onnx.save(model, src)
    if how == "dynamic":
        quantize_dynamic(src, dst, weight_type=QuantType.QInt8)
        return dst

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{input_name: rng.random((1, *shape), dtype=np.float32)} for _ in range(16)])

        def get_next(self):
            return next(self.batches, None)

    quantize_static(src, dst, Reader(), quant_format=QuantFormat.QDQ if how == "qdq" else QuantFormat.QOperator,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return dst


def activation_only(path: Path, out: Path) -> Path:
    """A QDQ model whose weights are plain floats again (each constant DequantizeLinear folded),
    as a QDQ export that quantizes only activations writes it."""
    model = onnx.load(path)
    inits = {t.name: t for t in model.graph.initializer}
    kept = []
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in inits:
            q = numpy_helper.to_array(inits[node.input[0]]).astype(np.float64)
            scale = numpy_helper.to_array(inits[node.input[1]]).astype(np.float64)
            zp = numpy_helper.to_array(inits[node.input[2]]).astype(np.float64) if len(node.input) > 2 else 0.0
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            if np.ndim(scale) == 1 and q.ndim > 1:
                shape = [1] * q.ndim
                shape[axis] = -1
                scale, zp = scale.reshape(shape), np.reshape(zp, shape) if np.ndim(zp) else zp
            model.graph.initializer.append(numpy_helper.from_array(((q - zp) * scale).astype(np.float32), node.output[0]))
        else:
            kept.append(node)
    del model.graph.node[:]
    model.graph.node.extend(kept)
    onnx.save(model, out)
    return out
