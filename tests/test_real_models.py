"""Models real producers write: onnxruntime's own static (QDQ, QOperator) and dynamic quantizers,
symbolic batch dimensions, files onnx.checker refuses but onnxruntime runs, qonnx's channels-last
layout, and ops fhe-lint cannot read, which must be named rather than skipped.

The truth is computed here from the models' own integer initializers with Python integers, and
the three onnxruntime formats of one float model must agree layer by layer."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import FIXTURES, lint_json, run_cli
from onnx import helper, numpy_helper
from reference import concrete_bits

ort_models = pytest.importorskip("ort_models")
pytest.importorskip("onnxruntime")

CNN_LAYERS = ["conv1", "conv2", "gap", "fc"]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("ort")
    out = {f"{name}.{how}": ort_models.quantized(tmp, name, build, how)
           for name, build in (("cnn", ort_models.cnn), ("attention", ort_models.attention))
           for how in ("qdq", "qoperator", "dynamic")}
    out["cnn.activations"] = ort_models.activation_only(out["cnn.qdq"], tmp / "cnn.activations.onnx")
    return out


def _layers(path: Path, *args: str) -> dict[str, dict]:
    rc, rep = lint_json(path, *args)
    f = rep["files"][0]
    assert "error" not in f, f.get("error")
    return {layer["node"]: layer for layer in f["layers"]}


def _weight_truth(model: onnx.ModelProto, layer: str) -> tuple[int, int]:
    """The QDQ layer's exact accumulator range from its int8 weight initializer and the uint8
    input grid [0, 255], with Python integers: hi = sum max(d*0, d*255), lo = sum min(...)."""
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    node = next(n for n in model.graph.node if n.name == layer)
    dq = producer[node.input[1]]
    q = inits[dq.input[0]].astype(np.int64)
    zp = inits[dq.input[2]].astype(np.int64) if len(dq.input) > 2 else np.zeros(())
    d = (q - (zp.reshape(-1, *[1] * (q.ndim - 1)) if zp.ndim else zp))
    rows = d.reshape(d.shape[0], -1) if node.op_type == "Conv" else (d.T if not _attr(node, "transB") else d)
    lo = min(sum(min(0, int(v) * 255) for v in row) for row in rows)
    hi = max(sum(max(0, int(v) * 255) for v in row) for row in rows)
    return lo, hi


def _attr(node: onnx.NodeProto, name: str) -> int:
    return next((a.i for a in node.attribute if a.name == name), 0)


def test_static_qdq_layers_are_exact_including_shapes_only_inference_knows(built):
    model = onnx.load(built["cnn.qdq"])
    layers = _layers(built["cnn.qdq"])
    assert list(layers) == CNN_LAYERS  # the batch dimension is symbolic: the pool is still analysed
    for name in ("conv1", "conv2", "fc"):
        lo, hi = _weight_truth(model, name)
        assert layers[name]["accumulator_range"] == [lo, hi]
        assert layers[name]["accumulator_bits"] == concrete_bits(lo, hi)
    assert layers["gap"]["accumulator_range"] == [0, 7 * 7 * 255]  # 14x14 -> stride 2 -> 7x7 uint8 taps
    attention = _layers(built["attention.qdq"])
    assert attention["scores"]["accumulator_range"] == [0, 32 * 255 * 255]  # K = 32 products of uint8


def test_the_three_onnxruntime_formats_agree_layer_by_layer(built):
    qdq = _layers(built["cnn.qdq"])
    for how in ("qoperator", "dynamic"):
        other = list(_layers(built[f"cnn.{how}"]).values())
        weighted = [layer for layer in other if layer["weight_bits"] is not None]
        assert [layer["accumulator_range"] for layer in weighted] == \
            [qdq[n]["accumulator_range"] for n in ("conv1", "conv2", "fc")]
    qoperator = list(_layers(built["cnn.qoperator"]).values())
    assert qoperator[2]["op"] == "QLinearGlobalAveragePool" and qoperator[2]["accumulator_range"] == [0, 12495]
    scores = list(_layers(built["attention.qoperator"]).values())[-1]
    assert scores["op"] == "QLinearMatMul" and scores["accumulator_range"] == [0, 32 * 255 * 255]


def test_a_dynamic_models_float_tail_is_named_with_its_reason(built):
    _, rep = lint_json(built["attention.dynamic"])
    unknown = {d["node"]: d["message"] for d in rep["files"][0]["diagnostics"] if d["code"] == "FHE005"}
    assert list(unknown) == ["scores"] and "no quantizer after it" in unknown["scores"]


def test_qdq_quantizing_only_activations_is_a_float_layer_with_a_known_input(built):
    path = built["cnn.activations"]
    _, rep = lint_json(path)
    unknown = {d["node"] for d in rep["files"][0]["diagnostics"] if d["code"] == "FHE005"}
    assert unknown == {"conv1", "conv2", "fc"}
    layers = _layers(path, "--weight-bits", "8")
    assert all(layers[n]["input_range"] == [0, 255] for n in ("conv1", "conv2", "fc"))  # from the QDQ, not assumed
    assert layers["gap"]["accumulator_range"] == [0, 12495]


def _variant(src: Path, out: Path, change) -> Path:
    model = onnx.load(src)
    change(model)
    out.write_bytes(model.SerializeToString())
    return out


def _shuffle(model: onnx.ModelProto) -> None:
    nodes = list(model.graph.node)
    random.Random(0).shuffle(nodes)
    del model.graph.node[:]
    model.graph.node.extend(nodes)


def _untyped_value_info(model: onnx.ModelProto) -> None:
    model.graph.value_info.add().name = "r1"


def _typed_without_shape(model: onnx.ModelProto) -> None:
    v = model.graph.value_info.add()
    v.name, v.type.tensor_type.elem_type = "r2", onnx.TensorProto.FLOAT


@pytest.mark.parametrize("change", [_shuffle, _untyped_value_info, _typed_without_shape])
def test_files_onnxruntime_runs_are_linted_like_the_clean_one(built, change, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    path = _variant(built["cnn.qdq"], tmp_path / "variant.onnx", change)
    ort.InferenceSession(str(path)).run(None, {"x": np.zeros((1, 3, 14, 14), np.float32)})  # the runtime's word
    assert _layers(path) == _layers(built["cnn.qdq"])
    rc, rep = lint_json(path)
    complaints = [d for d in rep["files"][0]["diagnostics"] if d["code"] == "FHE006"]
    try:
        onnx.checker.check_model(onnx.load(path))
        assert complaints == []
    except onnx.checker.ValidationError as e:
        (complaint,) = complaints
        assert complaint["severity"] == "warning" and complaint["checker"][:80] == " ".join(str(e).split())[:80]


def test_a_truly_symbolic_summed_dimension_stays_unknown_with_that_reason(tmp_path):
    from qonnx_builder import QonnxBuilder

    b = QonnxBuilder()
    x = b.quant(b.input([1, 4, 8, 8]), 0.1, 4, signed=False)
    model = b.build(b.node("GlobalAveragePool", [x], name="gap"))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[2].ClearField("dim_value")
    dims[2].dim_param = "H"
    model.graph.ClearField("value_info")
    del model.graph.output[0].type.tensor_type.shape.dim[:]
    onnx.save(model, tmp_path / "m.onnx")
    _, rep = lint_json(tmp_path / "m.onnx", "--select", "FHE005")
    (d,) = rep["files"][0]["diagnostics"]
    assert d["node"] == "gap"
    assert d["message"] == "range unknown: the shape of its input is [1, 4, '?', 8]: a summed dimension is symbolic"


def _channels_last(model: onnx.ModelProto) -> onnx.ModelProto:
    """The same network in qonnx's channels-last layout, written by hand: the input transposed to
    NHWC once, each Conv in the channels-last domain with its weight as O, kh, kw, I, and the
    data back to NCHW before the Flatten, so every layer computes the same sums."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    inits = {t.name: t for t in g.initializer}
    nodes = [helper.make_node("Transpose", [g.input[0].name], ["x_nhwc"], name="to_nhwc", perm=[0, 2, 3, 1])]
    rename = {g.input[0].name: "x_nhwc"}
    for node in g.node:
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        copy.input[:] = [rename.get(i, i) for i in node.input]
        if node.op_type == "Flatten":
            nodes.append(helper.make_node("Transpose", [copy.input[0]], ["back_nchw"], name="to_nchw", perm=[0, 3, 1, 2]))
            copy.input[0] = "back_nchw"
        if node.op_type == "Conv":
            copy.domain = "qonnx.custom_op.channels_last"
        nodes.append(copy)
        if node.op_type == "Quant" and node.input[0] in inits and len(inits[node.input[0]].dims) == 4:
            w = numpy_helper.to_array(inits[node.input[0]])
            inits[node.input[0]].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(w.transpose(0, 2, 3, 1)),
                                                                  node.input[0]))
            for scale in node.input[1:3]:  # per-channel scale/zero-point: channel axis stays first
                s = numpy_helper.to_array(inits[scale])
                if s.ndim == 4:
                    inits[scale].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(s.transpose(0, 2, 3, 1)), scale))
    del g.node[:]
    g.node.extend(nodes)
    g.ClearField("value_info")
    out.opset_import.add(domain="qonnx.custom_op.channels_last", version=1)
    return out


def test_channels_last_qonnx_reads_as_the_same_network(tmp_path):
    src = FIXTURES / "cnn_w3a3.onnx"
    path = tmp_path / "cl.onnx"
    onnx.save(_channels_last(onnx.load(src)), path)
    calib = FIXTURES / "cnn_w3a3.calib.npy"
    standard = list(_layers(src, "--calibration", calib).values())
    last = list(_layers(path, "--calibration", calib).values())
    keys = ("op", "neurons", "fan_in", "accumulator_range", "accumulator_bits", "observed_range")
    assert [[layer[k] for k in keys] for layer in last] == [[layer[k] for k in keys] for layer in standard]


def test_qonnx_own_channels_last_transformation_when_available(tmp_path):
    pytest.importorskip("qonnx.transformation.channels_last", reason="qonnx not installed")
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.channels_last import ConvertToChannelsLastAndClean
    from qonnx.util.cleanup import cleanup_model

    src = FIXTURES / "cnn_w3a3.onnx"
    cleanup_model(ModelWrapper(str(src))).transform(ConvertToChannelsLastAndClean()).save(str(tmp_path / "cl.onnx"))
    ops = {n.domain for n in onnx.load(tmp_path / "cl.onnx").graph.node}
    assert "qonnx.custom_op.channels_last" in ops
    standard = [layer["accumulator_range"] for layer in _layers(src).values()]
    assert [layer["accumulator_range"] for layer in _layers(tmp_path / "cl.onnx").values()] == standard


def test_an_op_fhe_lint_cannot_read_is_named_not_skipped(tmp_path):
    g = helper.make_graph(
        [helper.make_node("MyDense", ["x", "w"], ["y"], domain="vendor.ops", name="dense0")], "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 3])],
        [numpy_helper.from_array(np.ones((4, 3), np.float32), "w")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("vendor.ops", 1)])
    onnx.save(model, tmp_path / "custom.onnx")
    p = run_cli(tmp_path / "custom.onnx")
    assert p.returncode == 1 and "nothing to check" not in p.stderr
    assert "dense0: FHE005 range unknown: vendor.ops.MyDense looks like a linear layer" in p.stdout
    assert "dense0: FHE004 vendor.ops.MyDense is not supported" in p.stdout


def test_an_onnxruntime_qdq_model_is_calibrated_and_fixed_to_fewer_bits_in_its_int8_container(built, tmp_path):
    """onnx's evaluator runs onnxruntime's opset-17 QDQ (QuantizeLinear before opset 19), and
    `--fix-strategy bits` narrows the int8 weights' levels in place: onnxruntime runs the fixed
    model and it lints clean."""
    import onnxruntime as ort

    src, out = built["cnn.qdq"], tmp_path / "fixed.onnx"
    data = tmp_path / "calib.npy"
    x = np.random.default_rng(3).random((32, 3, 14, 14), dtype=np.float32)
    np.save(data, x)
    rc, rep = lint_json(src, "--select", "FHE001", "--fix", "-o", out, "--fix-strategy", "bits",
                        "--calibration", data)
    f = rep["files"][0]
    assert rc == 0 and f["fix"]["strategy"] == "bits" and f["fix"]["written"]
    before = {t.name: numpy_helper.to_array(t) for t in onnx.load(src).graph.initializer}
    after = {t.name: numpy_helper.to_array(t) for t in onnx.load(out).graph.initializer}
    narrowed = [name for name, w in after.items() if w.dtype == np.int8 and w.size > 20
                and np.abs(w).max() < np.abs(before[name]).max()]
    assert narrowed and all(after[name].dtype == before[name].dtype for name in narrowed)
    (name_in,) = [i.name for i in onnx.load(out).graph.input]
    y0 = ort.InferenceSession(str(src)).run(None, {name_in: x})[0]
    y1 = ort.InferenceSession(str(out)).run(None, {name_in: x})[0]
    assert np.mean(y0.argmax(1) == y1.argmax(1)) >= 0.9
    assert lint_json(out, "--select", "FHE001")[0] == 0
    fixed = onnx.load(out)  # the old scales the re-gridded quantizers no longer read are gone
    assert {t.name for t in fixed.graph.initializer} <= {i for n in fixed.graph.node for i in n.input}


def test_an_onnxruntime_qoperator_model_is_fixed_to_fewer_bits_in_its_int8_container(built, tmp_path):
    """QLinearConv and QGemm hold their weight's scale and int32 bias themselves: `bits` narrows
    the int8 levels, gives the layer the coarser scale and the bias in its larger steps, and
    onnxruntime runs the fixed model with the same predictions; it lints clean."""
    import onnxruntime as ort

    src, out = built["cnn.qoperator"], tmp_path / "fixed.onnx"
    rc, rep = lint_json(src, "--select", "FHE001", "--fix", "-o", out, "--fix-strategy", "bits")
    f = rep["files"][0]
    assert rc == 0 and f["fix"]["written"]
    assert {layer["strategy"] for layer in f["fix"]["layers"].values()} == {"bits"}
    before = {t.name: numpy_helper.to_array(t) for t in onnx.load(src).graph.initializer}
    fixed = onnx.load(out)
    after = {t.name: numpy_helper.to_array(t) for t in fixed.graph.initializer}
    original = {n.name: n for n in onnx.load(src).graph.node}
    for node in (n for n in fixed.graph.node if n.op_type in ("QLinearConv", "QGemm")):
        old, bias_at = original[node.name], 8 if node.op_type == "QLinearConv" else 6
        (w, old_w), (step, old_step), (bias, old_bias) = (
            (after[node.input[i]].astype(np.float64), before[old.input[i]].astype(np.float64)) for i in (3, 4, bias_at))
        per_row = (-1,) + (1,) * (w.ndim - 1)  # per-tensor or per-output-channel scales
        assert after[node.input[3]].dtype == np.int8 and np.abs(w).max() < np.abs(old_w).max()
        assert after[node.input[bias_at]].dtype == np.int32 and (step > old_step).all()
        # the real weights and bias (in steps of input x weight scale) stay, within half a new step
        assert (np.abs(w * step.reshape(per_row) - old_w * old_step.reshape(per_row)) <= step.reshape(per_row) / 2 * 1.0001).all()
        assert (np.abs(bias * step - old_bias * old_step) <= step / 2 * 1.0001).all()
    x = np.random.default_rng(3).random((32, 3, 14, 14), dtype=np.float32)
    (name_in,) = [i.name for i in fixed.graph.input]
    y0 = ort.InferenceSession(str(src)).run(None, {name_in: x})[0]
    y1 = ort.InferenceSession(str(out)).run(None, {name_in: x})[0]
    assert np.mean(y0.argmax(1) == y1.argmax(1)) >= 0.9
    assert lint_json(out, "--select", "FHE001")[0] == 0


def test_an_onnxruntime_qoperator_model_is_calibrated_with_onnxruntime(built, tmp_path):
    """onnx's evaluator has no com.microsoft ops (QGemm, QLinearGlobalAveragePool): the
    calibration runs such a model in onnxruntime, so the default fix with data (auto) measures
    each candidate's agreement on it."""
    src, out, data = built["cnn.qoperator"], tmp_path / "fixed.onnx", tmp_path / "calib.npy"
    np.save(data, np.random.default_rng(3).random((32, 3, 14, 14), dtype=np.float32))
    rc, rep = lint_json(src, "--select", "FHE001", "--fix", "-o", out, "--calibration", data)
    fix = rep["files"][0]["fix"]
    assert rc == 0 and fix["written"] and fix["strategy"] in ("prune", "compensate", "bits")
    assert fix["agreement"] is not None and fix["agreement"] >= 0.9
    assert lint_json(out, "--select", "FHE001")[0] == 0
