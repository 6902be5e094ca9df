"""The command line contract: exit codes, one-line errors, options, rule docs, packaging."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from conftest import FIXTURES, lint_json, run_cli
from qonnx_builder import QonnxBuilder, integer_weights

CLEAN = FIXTURES / "mlp_w2a2.onnx"
OVERFLOW = FIXTURES / "mlp_w6a6_unsigned_in.onnx"


def assert_one_line_error(p: subprocess.CompletedProcess, fragment: str) -> None:
    assert p.returncode == 2, p.stdout + p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fhe-lint: error: "), p.stderr
    assert fragment in lines[0]
    assert "Traceback" not in p.stderr + p.stdout


def _model_with_bits(tmp_path, bits) -> str:
    rng = np.random.default_rng(0)
    _, w = integer_weights(rng, (2, 4), 4)
    b = QonnxBuilder()
    x = b.quant(b.input([1, 4]), 0.1, bits)
    m = b.build(b.node("Gemm", [x, b.weight(w, 0.1, 4)], transB=1))
    path = tmp_path / f"bits_{bits}.onnx"
    onnx.save(m, path)
    return path


def _write(name: str, data: bytes):
    def make(d):
        (d / name).write_bytes(data)
        return d / name

    return make


BAD_INPUTS = {
    "missing": (lambda d: d / "nope.onnx", "no such file"),
    "empty directory": (lambda d: d, "no .onnx model under this directory"),
    "empty": (_write("e.onnx", b""), "not an ONNX model"),
    "text": (_write("t.onnx", b"hello\n"), "not an ONNX model"),
    "random": (_write("r.onnx", bytes([8]) + np.random.default_rng(0).bytes(5000)), "not an ONNX model"),
    "truncated": (_write("tr.onnx", CLEAN.read_bytes()[:20000]), "truncated"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_and_exit_2(case, tmp_path):
    make, fragment = BAD_INPUTS[case]
    assert_one_line_error(run_cli(make(tmp_path)), fragment)


@pytest.mark.parametrize(("bits", "fragment"), [(0, "outside 1..32"), (40, "outside 1..32"), (2.5, "one integer"), (-3, "outside")])
def test_absurd_bit_widths(bits, fragment, tmp_path):
    assert_one_line_error(run_cli(_model_with_bits(tmp_path, bits)), fragment)


def test_missing_initializer(tmp_path):
    m = onnx.load(CLEAN)
    victim = next(n.input[1] for n in m.graph.node if n.op_type == "Quant" and "weight" in n.name)
    keep = [t for t in m.graph.initializer if t.name != victim]
    del m.graph.initializer[:]
    m.graph.initializer.extend(keep)
    path = tmp_path / "missing_init.onnx"
    onnx.save(m, path)
    assert_one_line_error(run_cli(path), victim)


def test_graph_without_linear_layers(tmp_path):
    b = QonnxBuilder()
    m = b.build(b.node("Relu", [b.quant(b.input([1, 4]), 0.1, 4)]))
    path = tmp_path / "nolinear.onnx"
    onnx.save(m, path)
    assert_one_line_error(run_cli(path), "no linear layer")


def test_one_bad_file_among_good_ones_still_reports_the_others(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_text("not a model")
    p = run_cli(CLEAN, bad, OVERFLOW)
    assert p.returncode == 2
    assert "FHE001" in p.stdout and p.stderr.count("fhe-lint: error:") == 1


@pytest.mark.parametrize("make, verdict", [(lambda d: CLEAN, 0), (lambda d: OVERFLOW, 1),
                                           (_write("bad.onnx", b"not a model"), 2)], ids=["clean", "findings", "bad"])
def test_a_reader_that_stops_early_leaves_the_verdict(make, verdict, tmp_path):
    """``fhe-lint m.onnx | head -0``: the report's pipe is closed before it is written; the exit
    code is still the verdict (click alone exits 1), and no traceback follows."""
    p = subprocess.Popen([sys.executable, "-m", "fhe_lint", str(make(tmp_path))],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    p.stdout.close()
    err = p.stderr.read()
    assert p.wait(timeout=600) == verdict, err
    assert "Traceback" not in err and "Exception ignored" not in err


def test_exit_codes_warnings_and_strict():
    # mlp_w4a4_deep has FHE002 warnings only with a small multiplier; warnings exit 0, --strict exits 1
    args = [FIXTURES / "mlp_w4a4_deep.onnx", "--multiplier", "0.1"]
    rc, rep = lint_json(*args)
    assert rc == 0 and rep["summary"]["warnings"] > 0 and rep["summary"]["errors"] == 0
    rc, _ = lint_json(*args, "--strict")
    assert rc == 1


def test_select_ignore_and_n_max():
    rc, rep = lint_json(OVERFLOW, "--ignore", "FHE001,FHE002")
    assert rc == 0 and rep["files"][0]["diagnostics"] == []
    rc, rep = lint_json(OVERFLOW, "--select", "FHE002")
    assert {d["code"] for d in rep["files"][0]["diagnostics"]} == {"FHE002"}
    rc, rep = lint_json(OVERFLOW, "--n-max", "17", "--select", "FHE001")
    assert rc == 0 and rep["files"][0]["n_max"] == 17


@pytest.mark.parametrize("args", [["--select", "FHE999", str(CLEAN)], ["--output", "x.onnx", str(CLEAN)],
                                  ["--n-max", "0", str(CLEAN)], ["--format", "xml", str(CLEAN)], ["check"]])
def test_usage_errors_exit_2(args):
    p = run_cli(*args)
    assert p.returncode == 2 and "Traceback" not in p.stderr


def test_text_lines_are_grep_able():
    p = run_cli(OVERFLOW)
    assert p.returncode == 1
    line = next(x for x in p.stdout.splitlines() if " FHE001 " in x)
    assert line.startswith(f"{OVERFLOW}:/seq/seq.3/Gemm: FHE001 4 of 10 neurons need up to 17 bits > n_max 16")
    assert line.endswith(": neurons 2, 4-6")
    assert p.stdout.strip().splitlines()[-1].startswith("Found ")
    quiet = run_cli(OVERFLOW, "--quiet", "--per-neuron").stdout
    assert "Found " not in quiet and quiet.count(" FHE001 ") == 4
    assert all(x.startswith(f"{OVERFLOW}:/seq/seq.3/Gemm[neuron ") for x in quiet.splitlines() if " FHE001 " in x)
    advice = [x for x in p.stdout.splitlines() if ": advice: " in x]  # pruning is not the only cure
    assert advice == [f"{OVERFLOW}:/seq/seq.3/Gemm: advice: fits without pruning at 5-bit weights "
                      "(with 6-bit inputs) or 5-bit inputs (with 6-bit weights)"]


def test_layers_table():
    p = run_cli(CLEAN, "--layers")
    assert p.returncode == 0
    assert "headroom" in p.stdout and "/seq/seq.1/Gemm" in p.stdout and "[-40, 35]" in p.stdout


def test_rule_docs_for_every_code():
    from fhe_lint.rule import DOC_SECTIONS
    from fhe_lint.rules import RULES

    listing = run_cli("rules").stdout
    for code in RULES:
        p = run_cli("rule", code.lower())
        assert p.returncode == 0 and code in p.stdout and code in listing
        for section in DOC_SECTIONS:
            assert f"## {section}" in p.stdout, (code, section)
    assert run_cli("rule", "FHE999").returncode == 2


def test_version_and_help():
    assert run_cli("--version").stdout.startswith("fhe-lint, version")
    p = run_cli("check", "--help")
    assert p.returncode == 0 and "--fix" in p.stdout and "--max-prune" in p.stdout


def test_rules_install_as_fhe_lint_rules_and_no_heavy_imports():
    code = (
        "import importlib.util, sys, fhe_lint.cli, fhe_lint.fix, fhe_lint.rules;"
        "print(importlib.util.find_spec('rules') is None,"
        " any(m.split('.')[0] in ('concrete', 'torch', 'onnxruntime') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", check=True)
    assert out.stdout.split() == ["True", "False"]


def test_rule_metadata_and_code_parsing_import_neither_onnx_nor_numpy():
    """`fhe-lint rule CODE` and config parsing answer at once: no onnx, no numpy behind them."""
    code = (
        "import sys, fhe_lint.cli, fhe_lint.rules, fhe_lint.config;"
        "fhe_lint.config.parse_codes('FHE001,FHE002');"
        "print(sorted(m for m in ('onnx', 'numpy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_cnns_lint_and_cost_infer_shapes_without_importing_onnx(tmp_path):
    """Convolutions need shapes (pools, the cost's output counts): onnx's C++ inference does it;
    onnx's Python package (0.5-1.6 s of start-up) stays out of a pre-commit lint."""
    model = onnx.load(FIXTURES / "cnn_w6a6_overflow.onnx")
    del model.graph.value_info[:]  # as most exporters write it: only inference knows the shapes
    onnx.save(model, tmp_path / "cnn.onnx")
    code = (
        "import sys; from pathlib import Path; from fhe_lint.linter import lint_path;"
        "from fhe_lint.settings import Settings; from fhe_lint.analysis.cost import model_cost;"
        f"r = lint_path(Path({str(tmp_path / 'cnn.onnx')!r}), Settings());"
        "import json; print(json.dumps([[c.tlu_count for c in model_cost(r.analysis, None, None).values()],"
        " 'onnx' in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    counts, imported = json.loads(out)
    assert counts[:2] == [1536, 432] and not imported  # Concrete ML's count (the conv outputs' shapes known)


def test_json_is_parseable_for_many_files():
    rc, rep = lint_json(CLEAN, OVERFLOW)
    assert rc == 1 and [f["path"] for f in rep["files"]] == [str(CLEAN), str(OVERFLOW)]
    assert json.loads(json.dumps(rep)) == rep


@pytest.mark.parametrize("args", [["--bogus", "m.onnx"], ["rule", "FHE999"], [str(OVERFLOW), "-o", "x.onnx"]])
def test_usage_errors_are_one_line_exit_2(args):
    p = run_cli(*args)
    assert p.returncode == 2 and p.stdout == ""
    (line,) = p.stderr.strip().splitlines()
    assert line.startswith("fhe-lint: error: ")
