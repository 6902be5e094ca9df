"""Small QONNX models built in the tests, laid out as Brevitas exports them.

float input -> Quant -> Gemm/MatMul/Conv(weight: float initializer -> Quant [-> layout ops]).
"""

from __future__ import annotations

import itertools

import numpy as np
import onnx
from onnx import helper, numpy_helper


class QonnxBuilder:
    def __init__(self, dtype=np.float32) -> None:
        self.dtype = np.dtype(dtype)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[str] = []
        self._ids = itertools.count()

    @property
    def _elem(self) -> int:
        return helper.np_dtype_to_tensor_dtype(self.dtype)

    def fresh(self, stem: str) -> str:
        return f"{stem}_{next(self._ids)}"

    def const(self, value, name: str | None = None) -> str:
        name = name or self.fresh("c")
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=self.dtype), name))
        return name

    def const_int(self, value) -> str:
        name = self.fresh("i")
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=np.int64), name))
        return name

    def input(self, shape: list[int], name: str = "x") -> str:
        self.inputs.append(helper.make_tensor_value_info(name, self._elem, shape))
        return name

    def node(self, op: str, inputs: list[str], domain: str = "", name: str | None = None, **attrs) -> str:
        out = self.fresh(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=name or self.fresh(op), domain=domain, **attrs))
        return out

    def quant(self, x: str, scale, bits: int, signed: bool = True, narrow: bool = False, zero_point=0.0,
              name: str | None = None, domain: str = "onnx.brevitas") -> str:
        s = scale if isinstance(scale, str) else self.const(scale)
        z = zero_point if isinstance(zero_point, str) else self.const(zero_point)
        b = bits if isinstance(bits, str) else self.const(float(bits))
        return self.node("Quant", [x, s, z, b], domain=domain, name=name, signed=int(signed), narrow=int(narrow),
                         rounding_mode="ROUND")

    def weight(self, w: np.ndarray, scale, bits: int, zero_point=0.0, narrow: bool = True,
               name: str | None = None) -> str:
        return self.quant(self.const(w, name), scale, bits, signed=True, narrow=narrow, zero_point=zero_point)

    def build(self, output: str) -> onnx.ModelProto:
        """The model, its output shape found by running it once (onnx's shape inference stops at Quant)."""
        from reference import run

        def make(shape):
            graph = helper.make_graph(
                self.nodes, "g", self.inputs, [helper.make_tensor_value_info(output, self._elem, shape)],
                initializer=self.inits,
            )
            model = helper.make_model(
                graph, opset_imports=[helper.make_opsetid("", 14), helper.make_opsetid("onnx.brevitas", 1)],
                producer_name="fhe-lint-tests",
            )
            model.ir_version = 8
            return model

        dims = [d.dim_value for d in self.inputs[0].type.tensor_type.shape.dim]
        try:
            shape = list(run(make(None), np.zeros(dims, dtype=self.dtype)).shape)
        except Exception:  # noqa: BLE001 - deliberately broken models (bad bit-widths) do not run
            shape = ["batch", "features"]
        return make(shape)


def integer_weights(rng: np.random.Generator, shape, bits: int, scale: float = 0.1, density: float = 1.0):
    """Float weights exactly on a signed narrow ``bits`` grid (so their integers are known)."""
    m = 2 ** (bits - 1) - 1
    q = rng.integers(-m, m + 1, size=shape)
    q = np.where(rng.random(shape) < density, q, 0)
    return q, (q * scale).astype(np.float32)


def mlp(rng: np.random.Generator, in_bits: int, w_bits: int, sizes=(16, 8, 4), signed_input: bool = True,
        scale: float = 0.1) -> tuple[onnx.ModelProto, list[np.ndarray]]:
    """x -> Quant -> [Gemm(transB=1) -> Relu -> Quant(unsigned)]... ; returns model and integer weights."""
    b = QonnxBuilder()
    h = b.quant(b.input([1, sizes[0]]), 0.05, in_bits, signed=signed_input)
    qs = []
    for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:])):
        q, w = integer_weights(rng, (n_out, n_in), w_bits, scale)
        qs.append(q)
        h = b.node("Gemm", [h, b.weight(w, scale, w_bits), b.const(np.zeros(n_out))], name=f"fc{i}", transB=1)
        if i < len(sizes) - 2:
            h = b.quant(b.node("Relu", [h]), 0.05, in_bits, signed=False)
    return b.build(h), qs
