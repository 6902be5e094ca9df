"""--fix: per-neuron pruning that makes the model pass, touches only violating neurons, loses nothing."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper
from conftest import LOSSY, FIXTURES, lint_json, run_cli
from qonnx_builder import QonnxBuilder, integer_weights
from reference import concrete_bits, run

from fhe_lint.analysis.accumulators import analyse
from fhe_lint.formats.graph import Graph
from fhe_lint.settings import Settings

FAILING = {"cnn_w6a6_overflow": [], "mlp_w6a6_unsigned_in": [], "mlp_w7a7_overflow": ["--max-prune", "100"]}


def weights(path: Path) -> dict[str, np.ndarray]:
    model = onnx.load(path)
    return {la.name: la.layer.weight.d for la in analyse(path, Graph(model), Settings()).layers}


def independent_bits(model: onnx.ModelProto) -> dict[str, int]:
    """Each Gemm/Conv layer's worst-case accumulator bits, decoded here with numpy alone from the
    initializers and the QONNX Quant attributes (not by fhe-lint): the oracle a fix is judged by."""
    inits = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}

    def quant(node: onnx.NodeProto) -> tuple[int, int, np.ndarray | None]:
        a = {x.name: helper.get_attribute_value(x) for x in node.attribute}
        bits, signed, narrow = int(inits[node.input[3]]), a.get("signed", 1), a.get("narrow", 0)
        lo, hi = (-(2 ** (bits - 1)) + narrow, 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1 - narrow)
        if node.input[0] not in inits:
            return lo, hi, None
        s, zp = inits[node.input[1]], inits[node.input[2]]
        return lo, hi, np.clip(np.rint(inits[node.input[0]] / s + zp), lo, hi) - zp

    out = {}
    for node in model.graph.node:
        if node.op_type not in ("Gemm", "Conv"):
            continue
        x = producer[node.input[0]]
        while x.op_type == "Flatten":
            x = producer[x.input[0]]
        x_lo, x_hi, _ = quant(x)
        _, _, q = quant(producer[node.input[1]])
        d = q.reshape(q.shape[0], -1).astype(np.int64).astype(object)
        lo = np.minimum(d * x_lo, d * x_hi).sum(axis=1)
        hi = np.maximum(d * x_lo, d * x_hi).sum(axis=1)
        out[node.name] = concrete_bits(int(lo.min()), int(hi.max()))
    return out


def violating(path: Path, *flags: str) -> dict[str, set[int]]:
    _, rep = lint_json(path, *flags)
    out: dict[str, set[int]] = {}
    for d in rep["files"][0]["diagnostics"]:
        if d["code"] == "FHE001" or ("--strict" in flags and d["code"] == "FHE002"):
            out.setdefault(d["node"], set()).add(d["neuron"])
    return out


@pytest.mark.parametrize("name", sorted(FAILING))
def test_fix_makes_failing_fixture_pass_and_prunes_only_violating_neurons(name, tmp_path):
    src = FIXTURES / f"{name}.onnx"
    out = tmp_path / "fixed.onnx"
    before_bytes = src.read_bytes()
    p = run_cli(src, "--fix", *LOSSY, "-o", out, *FAILING[name])
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr
    assert src.read_bytes() == before_bytes
    rc, rep = lint_json(out)
    assert rc == 0 and all(layer["accumulator_bits"] <= 16 for layer in rep["files"][0]["layers"])
    assert max(independent_bits(onnx.load(src)).values()) > 16
    assert max(independent_bits(onnx.load(out)).values()) <= 16

    bad = violating(src)
    w0, w1 = weights(src), weights(out)
    for node, d0 in w0.items():
        d1 = w1[node]
        changed = d0 != d1
        assert set(np.flatnonzero(changed.any(axis=1))) <= bad.get(node, set()), node
        assert (d1[changed] == 0).all()  # pruning only removes weights, never changes a kept one

    m0, m1 = onnx.load(src), onnx.load(out)
    assert [(n.name, n.op_type, list(n.input), list(n.output)) for n in m0.graph.node] == \
           [(n.name, n.op_type, list(n.input), list(n.output)) for n in m1.graph.node]
    assert m0.opset_import == m1.opset_import and m0.metadata_props == m1.metadata_props
    weight_sources = {n.input[0] for n in m0.graph.node if n.op_type == "Quant"}
    for t0, t1 in zip(m0.graph.initializer, m1.graph.initializer):
        assert t0.name == t1.name
        if t0.name not in weight_sources:
            assert t0.SerializeToString() == t1.SerializeToString()


def test_fix_reports_pruned_counts_and_is_idempotent(tmp_path):
    src = FIXTURES / "mlp_w6a6_unsigned_in.onnx"
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    rc, rep = lint_json(src, "--fix", *LOSSY, "-o", a)
    fix = rep["files"][0]["fix"]
    assert rc == 0 and fix["refused"] is None and fix["written"] == str(a)
    d0, d1 = weights(src)["/seq/seq.3/Gemm"], weights(a)["/seq/seq.3/Gemm"]
    assert fix["pruned"] == {"/seq/seq.3/Gemm": int(((d0 != 0) & (d1 == 0)).sum())}
    rc, rep = lint_json(a, "--fix", *LOSSY, "-o", b)
    assert rc == 0 and rep["files"][0]["fix"]["pruned"] == {}
    assert a.read_bytes() == b.read_bytes()


def test_fix_in_place_and_clean_model_untouched(tmp_path):
    clean, bad = tmp_path / "clean.onnx", tmp_path / "bad.onnx"
    shutil.copy(FIXTURES / "mlp_w2a2.onnx", clean)
    shutil.copy(FIXTURES / "mlp_w6a6_unsigned_in.onnx", bad)
    clean_stat = clean.stat()
    assert run_cli(clean, bad, "--fix", *LOSSY).returncode == 0
    assert clean.read_bytes() == (FIXTURES / "mlp_w2a2.onnx").read_bytes()
    assert clean.stat().st_mtime_ns == clean_stat.st_mtime_ns  # not even rewritten
    assert bad.read_bytes() != (FIXTURES / "mlp_w6a6_unsigned_in.onnx").read_bytes()
    assert run_cli(bad).returncode == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.onnx", "clean.onnx"]  # no temp files left


def test_fix_refused_beyond_max_prune_leaves_everything_untouched(tmp_path):
    model = tmp_path / "m.onnx"
    shutil.copy(FIXTURES / "mlp_w7a7_overflow.onnx", model)
    p = run_cli(model, "--fix", *LOSSY, "-o", tmp_path / "out.onnx")
    assert p.returncode == 1
    assert "refused" in p.stdout and "max-prune" in p.stdout
    assert not (tmp_path / "out.onnx").exists()
    assert model.read_bytes() == (FIXTURES / "mlp_w7a7_overflow.onnx").read_bytes()


def test_strict_fix_enforces_nonzero_budget(tmp_path):
    out = tmp_path / "fixed.onnx"
    src = FIXTURES / "mlp_w6a6_unsigned_in.onnx"
    assert run_cli(src, "--fix", *LOSSY, "--strict", "-o", out).returncode == 0
    rc, rep = lint_json(out, "--strict")
    assert rc == 0 and rep["summary"]["warnings"] == 0
    assert all(layer["max_nonzero"] <= layer["omega"] for layer in rep["files"][0]["layers"])


def _shared_weight_model() -> tuple[onnx.ModelProto, np.ndarray]:
    """One float weight initializer behind two Quants: layer 'wide' overflows, layer 'narrow' fits."""
    rng = np.random.default_rng(0)
    q, w = integer_weights(rng, (4, 200), 6, 0.01)
    b = QonnxBuilder()
    x = b.input([1, 200])
    shared = b.const(w, "shared_w")
    wide = b.node("Gemm", [b.quant(x, 0.1, 8), b.quant(shared, 0.01, 6, narrow=True)], name="wide", transB=1)
    narrow = b.node("Gemm", [b.quant(x, 0.1, 2), b.quant(shared, 0.01, 6, narrow=True)], name="narrow", transB=1)
    return b.build(b.node("Add", [wide, narrow])), q


def test_fix_never_alters_a_layer_sharing_the_weight(tmp_path):
    model, _ = _shared_weight_model()
    src, out = tmp_path / "shared.onnx", tmp_path / "fixed.onnx"
    onnx.save(model, src)
    assert violating(src).keys() == {"wide"}
    p = run_cli(src, "--fix", *LOSSY, "-o", out, "--max-prune", "100")
    assert p.returncode == 0, p.stdout + p.stderr
    w0, w1 = weights(src), weights(out)
    assert (w0["narrow"] == w1["narrow"]).all()
    assert (w1["wide"] != w0["wide"]).any()
    fixed = onnx.load(out)
    x = np.random.default_rng(1).normal(size=(1, 200)).astype(np.float32)
    assert run(fixed, x).shape == run(model, x).shape  # the rewired graph still executes
    def shared(m: onnx.ModelProto) -> onnx.TensorProto:
        return next(t for t in m.graph.initializer if t.name == "shared_w")

    assert shared(fixed).SerializeToString() == shared(model).SerializeToString()  # a copy was pruned


def test_fix_with_nonzero_weight_zero_point(tmp_path):
    rng = np.random.default_rng(3)
    zp = 3.0
    q, _ = integer_weights(rng, (3, 600), 7)
    q = np.clip(q, -63 - zp + 1, 63 - zp)
    w = (q * 0.01).astype(np.float32)
    b = QonnxBuilder()
    x = b.quant(b.input([1, 600]), 0.1, 7)
    model = b.build(b.node("Gemm", [x, b.weight(w, 0.01, 7, zero_point=zp)], name="fc", transB=1))
    src, out = tmp_path / "zp.onnx", tmp_path / "fixed.onnx"
    onnx.save(model, src)
    assert "fc" in violating(src)
    assert run_cli(src, "--fix", *LOSSY, "-o", out, "--max-prune", "100").returncode == 0
    d0, d1 = weights(src)["fc"], weights(out)["fc"]
    pruned = (d0 != 0) & (d1 == 0)
    assert pruned.any() and ((d0 == d1) | pruned).all()
    rc, _ = lint_json(out)
    assert rc == 0


def _external(tmp_path: Path, name: str) -> Path:
    d = tmp_path / "ext"
    d.mkdir()
    onnx.save(onnx.load(FIXTURES / f"{name}.onnx"), d / "m.onnx", save_as_external_data=True,
              all_tensors_to_one_file=True, location="m.data", size_threshold=0)
    return d / "m.onnx"


def test_fix_in_place_keeps_external_data_and_patches_only_touched_tensors(tmp_path):
    path = _external(tmp_path, "mlp_w6a6_unsigned_in")
    data_before = (path.parent / "m.data").read_bytes()
    p = run_cli(path, "--fix", *LOSSY)
    assert p.returncode == 0, p.stdout + p.stderr
    assert sorted(f.name for f in path.parent.iterdir()) == ["m.data", "m.onnx"]  # no temp files left
    data_after = (path.parent / "m.data").read_bytes()
    assert len(data_after) == len(data_before) and data_after != data_before
    model = onnx.load(path, load_external_data=False)
    assert all(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    touched = next(t for t in model.graph.initializer if t.name == "/seq/seq.3/weight_quant/export_handler/Constant_output_0")
    info = {e.key: e.value for e in touched.external_data}
    start, end = int(info.get("offset", 0)), int(info.get("offset", 0)) + int(info["length"])
    assert data_after[:start] == data_before[:start] and data_after[end:] == data_before[end:]
    assert run_cli(path).returncode == 0
    d0, d1 = weights(FIXTURES / "mlp_w6a6_unsigned_in.onnx"), weights(path)
    assert (d1["/seq/seq.3/Gemm"] != d0["/seq/seq.3/Gemm"]).any() and (d1["/seq/seq.1/Gemm"] == d0["/seq/seq.1/Gemm"]).all()


def test_fix_of_external_data_model_to_another_path_embeds_the_data(tmp_path):
    path = _external(tmp_path, "mlp_w6a6_unsigned_in")
    out = tmp_path / "fixed.onnx"
    assert run_cli(path, "--fix", *LOSSY, "-o", out).returncode == 0
    assert all(t.data_location != onnx.TensorProto.EXTERNAL for t in onnx.load(out, load_external_data=False).graph.initializer)
    assert run_cli(out).returncode == 0 and run_cli(path).returncode == 1  # the input is untouched
