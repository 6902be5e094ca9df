"""Large synthetic QONNX models laid out as Brevitas exports them, for bench/run.py.

float weight -> Quant -> Gemm/Conv, ReLU -> Quant, 6-bit weights and activations (so the
largest layers overflow and --fix has work to do). Deterministic for a given size.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

DOMAIN = "onnx.brevitas"


def _quant(nodes, inits, x: str, name: str, bits: int, signed: bool, narrow: bool, scale) -> str:
    inits += [
        numpy_helper.from_array(np.asarray(scale, dtype=np.float32), f"{name}.scale"),
        numpy_helper.from_array(np.array(0.0, dtype=np.float32), f"{name}.zp"),
        numpy_helper.from_array(np.array(float(bits), dtype=np.float32), f"{name}.bits"),
    ]
    nodes.append(helper.make_node("Quant", [x, f"{name}.scale", f"{name}.zp", f"{name}.bits"], [f"{name}.out"],
                                  name=name, domain=DOMAIN, signed=int(signed), narrow=int(narrow),
                                  rounding_mode="ROUND"))
    return f"{name}.out"


def _weights(rng: np.random.Generator, shape, bits: int) -> tuple[np.ndarray, float]:
    w = rng.standard_normal(shape, dtype=np.float32) * 0.05
    return w, float(np.abs(w).max() / (2 ** (bits - 1) - 1))


def _model(nodes, inits, x_info, out: str) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "bench", [x_info], [helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, "classes"])],
                              initializer=inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14), helper.make_opsetid(DOMAIN, 1)])
    m.ir_version = 8
    return m


def mlp(widths: list[int], bits: int = 6, seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    h = _quant(nodes, inits, "x", "in_quant", bits, True, False, 0.05)
    for i, (n_in, n_out) in enumerate(zip(widths, widths[1:])):
        w, s = _weights(rng, (n_out, n_in), bits)
        inits += [numpy_helper.from_array(w, f"fc{i}.weight"), numpy_helper.from_array(np.zeros(n_out, np.float32), f"fc{i}.bias")]
        wq = _quant(nodes, inits, f"fc{i}.weight", f"fc{i}.wq", bits, True, True, s)
        nodes.append(helper.make_node("Gemm", [h, wq, f"fc{i}.bias"], [f"fc{i}.out"], name=f"fc{i}", transB=1))
        if i < len(widths) - 2:
            nodes.append(helper.make_node("Relu", [f"fc{i}.out"], [f"relu{i}"], name=f"relu{i}"))
            h = _quant(nodes, inits, f"relu{i}", f"act{i}", bits, False, False, 0.05)
    return _model(nodes, inits, helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, widths[0]]), f"fc{len(widths) - 2}.out")


def cnn(channels: list[int], fc: int, bits: int = 6, seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    h = _quant(nodes, inits, "x", "in_quant", bits, True, False, 0.05)
    side = 32
    for i, (c_in, c_out) in enumerate(zip(channels, channels[1:])):
        w, s = _weights(rng, (c_out, c_in, 3, 3), bits)
        inits.append(numpy_helper.from_array(w, f"conv{i}.weight"))
        wq = _quant(nodes, inits, f"conv{i}.weight", f"conv{i}.wq", bits, True, True, s)
        nodes.append(helper.make_node("Conv", [h, wq], [f"conv{i}.out"], name=f"conv{i}", kernel_shape=[3, 3],
                                      pads=[1, 1, 1, 1], strides=[2, 2] if i % 2 else [1, 1]))
        side = side // 2 if i % 2 else side
        nodes.append(helper.make_node("Relu", [f"conv{i}.out"], [f"crelu{i}"], name=f"crelu{i}"))
        h = _quant(nodes, inits, f"crelu{i}", f"cact{i}", bits, False, False, 0.05)
    nodes.append(helper.make_node("Flatten", [h], ["flat"], name="flatten", axis=1))
    n_in = channels[-1] * side * side
    w, s = _weights(rng, (fc, n_in), bits)
    inits.append(numpy_helper.from_array(w, "fc.weight"))
    wq = _quant(nodes, inits, "fc.weight", "fc.wq", bits, True, True, s)
    nodes.append(helper.make_node("Gemm", ["flat", wq], ["logits"], name="fc", transB=1))
    return _model(nodes, inits, helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels[0], 32, 32]), "logits")


def weight_count(model: onnx.ModelProto) -> int:
    return sum(int(np.prod(t.dims)) for t in model.graph.initializer if t.name.endswith(".weight"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    big_mlp = mlp([4096, 4096, 2048, 2048, 1024, 10])
    onnx.save(big_mlp, args.out / "mlp_25m.onnx")
    onnx.save(cnn([3, 128, 256, 256, 512, 512, 512, 512, 512], fc=10), args.out / "cnn_10m.onnx")
    # the same MLP with its weights in an external data file (the layout of models past 2 GiB)
    onnx.save(big_mlp, args.out / "mlp_25m_ext.onnx", save_as_external_data=True,
              all_tensors_to_one_file=True, location="mlp_25m_ext.data", size_threshold=1024)
    for f in sorted(args.out.glob("*.onnx")):
        print(f.name, weight_count(onnx.load(f, load_external_data=False)), f.stat().st_size)


if __name__ == "__main__":
    main()
