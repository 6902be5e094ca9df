"""Configuration files, their precedence under the command line, and suppressions."""

from __future__ import annotations

import json
import shutil

import onnx
import pytest
from conftest import FIXTURES, lint_json, run_cli

OVERFLOW = FIXTURES / "mlp_w6a6_unsigned_in.onnx"


@pytest.fixture
def project(tmp_path):
    (tmp_path / "models" / "legacy").mkdir(parents=True)
    for sub in ("models", "models/legacy"):
        shutil.copy(OVERFLOW, tmp_path / sub / "m.onnx")
    return tmp_path


def codes(rep, i=0) -> set[str]:
    return {d["code"] for d in rep["files"][i]["diagnostics"]}


def test_pyproject_config_applies_and_cli_overrides(project):
    (project / "pyproject.toml").write_text('[project]\nname = "x"\n\n[tool.fhe-lint]\nn-max = 17\nselect = ["FHE001"]\n')
    rc, rep = lint_json(project / "models" / "m.onnx")
    assert rc == 0 and rep["files"][0]["n_max"] == 17 and codes(rep) == set()
    rc, rep = lint_json(project / "models" / "m.onnx", "--n-max", "16")
    assert rc == 1 and rep["files"][0]["n_max"] == 16 and codes(rep) == {"FHE001"}
    rc, rep = lint_json(project / "models" / "m.onnx", "--isolated")
    assert rc == 1 and codes(rep) == {"FHE001", "FHE002"}


def test_nearest_config_wins_and_per_file_tables(project):
    (project / "fhe-lint.toml").write_text('ignore = ["FHE002"]\n[per-file."models/legacy/*.onnx"]\nn-max = 17\n')
    (project / "models" / "fhe-lint.toml").write_text('strict = true\n')
    rc, rep = lint_json(project / "models" / "m.onnx")  # models/fhe-lint.toml is nearer: no ignore there
    assert codes(rep) == {"FHE001", "FHE002"}
    (project / "models" / "fhe-lint.toml").unlink()
    rc, rep = lint_json(project / "models" / "m.onnx", project / "models" / "legacy" / "m.onnx")
    assert codes(rep, 0) == {"FHE001"} and rep["files"][1]["n_max"] == 17 and codes(rep, 1) == set()


def test_per_node_ignores_suppress_and_are_counted(project):
    (project / "fhe-lint.toml").write_text('per-node-ignores = { "/seq/seq.3/*" = ["ALL"], "/seq/seq.1/Gemm" = ["FHE002"] }\n')
    rc, rep = lint_json(project / "models" / "m.onnx")
    assert rc == 0 and rep["files"][0]["diagnostics"] == [] and rep["summary"]["suppressed"] > 0


def test_model_metadata_suppression(tmp_path):
    m = onnx.load(OVERFLOW)
    entry = m.metadata_props.add()
    entry.key, entry.value = "fhe-lint:ignore", "FHE002; FHE001 /seq/seq.3/Gemm"
    onnx.save(m, tmp_path / "m.onnx")
    rc, rep = lint_json(tmp_path / "m.onnx")
    assert rc == 0 and rep["files"][0]["diagnostics"] == []
    entry.value = "FHE999"
    onnx.save(m, tmp_path / "bad.onnx")
    p = run_cli(tmp_path / "bad.onnx")
    assert p.returncode == 2 and "unknown rule code or prefix FHE999" in p.stderr


def test_show_settings(project):
    (project / "fhe-lint.toml").write_text('multiplier = 2.5\n')
    p = run_cli(project / "models" / "m.onnx", "--show-settings", "--strict")
    assert p.returncode == 0
    shown = json.loads(p.stdout.split(": ", 1)[1])
    assert shown["multiplier"] == 2.5 and shown["strict"] is True and shown["source"].endswith("fhe-lint.toml")


@pytest.mark.parametrize("text", ['n-max = "big"\n', 'colour = 3\n', 'select = ["FHE999"]\n', 'n-max = [\n'])
def test_bad_config_is_one_line_exit_2(project, text):
    (project / "fhe-lint.toml").write_text(text)
    p = run_cli(project / "models" / "m.onnx")
    assert p.returncode == 2 and p.stderr.startswith("fhe-lint: error:") and len(p.stderr.strip().splitlines()) == 1
