"""Daily use in a repository and in CI: one finding per layer and rule, directories and globs,
GitHub's annotation limits, SARIF fingerprints, visible suppressions, the arguments a ruff user
types. The per-neuron JSON report (checked against Concrete ML's own numbers elsewhere) is the
truth the grouped views are held to."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import FIXTURES, lint_json, run_cli
from qonnx_builder import mlp

OVERFLOW = FIXTURES / "mlp_w6a6_unsigned_in.onnx"
CLEAN = FIXTURES / "mlp_w2a2.onnx"
MODELS = sorted(FIXTURES.glob("*.onnx"))
README = Path(__file__).resolve().parent.parent / "README.md"
GROUPED = re.compile(r"^(?P<path>.+?):(?P<node>[^:\[]+): (?P<code>FHE\d{3}) (?P<count>\d+) of \d+ neurons? .*: "
                     r"neurons? (?P<list>[\d, -]+?)(?:, \.\.\. \((?P<more>\d+) more runs\))?$")


def _expand(listed: str) -> set[int]:
    out: set[int] = set()
    for run in listed.split(", "):
        lo, _, hi = run.partition("-")
        out |= set(range(int(lo), int(hi or lo) + 1))
    return out


def _per_neuron_truth(*args) -> dict[tuple[str, str, str], set[int]]:
    _, rep = lint_json(*args)
    truth: dict[tuple[str, str, str], set[int]] = {}
    for f in rep["files"]:
        for d in f["diagnostics"]:
            truth.setdefault((f["path"], d["node"], d["code"]), set()).add(d["neuron"])
    return truth


def test_text_is_one_line_per_layer_and_rule_naming_exactly_the_json_neurons():
    p = run_cli(*MODELS, "--quiet", "--strict")
    grouped = {}
    for line in p.stdout.splitlines():
        if ": advice: " in line:
            continue
        m = GROUPED.match(line)
        assert m, line
        key = (m["path"], m["node"], m["code"])
        assert key not in grouped, f"two lines for one layer and rule: {line}"
        grouped[key] = (int(m["count"]), _expand(m["list"]), m["more"])
    truth = _per_neuron_truth(*MODELS, "--strict")
    assert set(grouped) == set(truth)
    for key, (count, listed, more) in grouped.items():
        assert count == len(truth[key])
        assert listed == truth[key] if more is None else listed == set(sorted(truth[key])[:len(listed)])
    assert any(more for _, _, more in grouped.values())  # a long list is cut, not a wall of numbers
    per_neuron = run_cli(*MODELS, "--quiet", "--per-neuron", "--strict").stdout.splitlines()
    assert sum(" FHE0" in x for x in per_neuron) == sum(map(len, truth.values()))


def test_grouped_overflow_names_the_worst_neuron_and_its_bits():
    _, rep = lint_json(OVERFLOW, "--select", "FHE001")
    diags = rep["files"][0]["diagnostics"]
    worst = max(diags, key=lambda d: (d["bits"], max(-d["range"][0] - 1, d["range"][1])))
    (line,) = [x for x in run_cli(OVERFLOW, "--select", "FHE001", "-q").stdout.splitlines() if "FHE001" in x]
    assert f"{len(diags)} of 10 neurons need up to {worst['bits']} bits > n_max 16" in line
    assert f"worst [{worst['range'][0]}, {worst['range'][1]}] at neuron {worst['neuron']}" in line


def test_readme_quick_start_prints_at_most_15_lines():
    block = README.read_text().split("```bash\n", 1)[1].split("```", 1)[0]
    command = block.splitlines()[0].split("&&", 1)[1].split()
    assert command[0] == "fhe-lint"
    p = run_cli(*command[1:], cwd=README.parent)
    assert p.returncode in (0, 1) and 0 < len(p.stdout.splitlines()) <= 15, p.stdout


def test_statistics_count_each_rule_like_ruff():
    _, rep = lint_json(*MODELS)
    per_code = Counter(d["code"] for f in rep["files"] for d in f["diagnostics"])
    layers = Counter(c for c, _ in {(d["code"], (f["path"], d["node"])) for f in rep["files"] for d in f["diagnostics"]})
    lines = run_cli(*MODELS, "--statistics").stdout.splitlines()
    rows = {x.split()[1]: x.split() for x in lines[:-1]}
    assert set(rows) == set(per_code)
    for code, row in rows.items():
        assert int(row[0]) == per_code[code] and int(row[3]) == layers[code]
    assert lines[-1].startswith("Found ")


def _annotations(stdout: str) -> list[tuple[str, str]]:
    grammar = re.compile(r"^::(error|warning|notice) (?:file=[^,:]+,)?title=([\w-]+)::([^\r\n]+)$")
    out = []
    for line in stdout.splitlines():
        m = grammar.match(line)
        assert m, line
        out.append((m[1], m[3]))
    return out


@pytest.mark.parametrize("model", MODELS, ids=lambda p: p.stem)
def test_github_annotations_fit_githubs_limits_most_severe_first(model):
    truth = _per_neuron_truth(model, "--strict")
    found = _annotations(run_cli(model, "--format", "github", "--strict").stdout)
    levels = [lvl for lvl, _ in found if lvl != "notice"]
    assert levels == sorted(levels) and levels.count("error") <= 10 and levels.count("warning") <= 10
    assert len(levels) == min(10, sum(c in ("FHE001", "FHE003", "FHE004", "FHE005") for _, _, c in truth)) + min(
        10, sum(c == "FHE002" for _, _, c in truth))
    for _, message in found:
        assert re.match(rf"^{re.escape(str(model))}:/[^:]+: ", message), message  # each names its layer


def test_github_caps_a_deep_overflowing_model_and_counts_the_rest(tmp_path):
    model, _ = mlp(np.random.default_rng(0), 8, 8, sizes=(64,) * 13)  # 12 layers, each 22 bits
    onnx.save(model, tmp_path / "deep.onnx")
    found = _annotations(run_cli(tmp_path / "deep.onnx", "--format", "github").stdout)
    levels = [lvl for lvl, _ in found]
    assert levels.count("error") == 10 and levels.count("warning") == 10 and found[-1][0] == "notice"
    assert found[-1][1].startswith("4 more finding(s) not annotated")  # 12 FHE001 and 12 FHE002 layers


def test_sarif_results_have_a_region_a_stable_fingerprint_and_separate_sentences():
    sarif_model = pytest.importorskip("pydantic_sarif.model")
    p = run_cli(OVERFLOW, "--format", "sarif")
    log = json.loads(p.stdout)
    sarif_model.StaticAnalysisResultsFormatSarifVersion210JsonSchema.model_validate(log)
    results = log["runs"][0]["results"]
    prints = [r["partialFingerprints"]["primaryLocationLineHash"] for r in results]
    assert len(set(prints)) == len(results)  # one identity per result
    assert prints == [r["partialFingerprints"]["primaryLocationLineHash"]
                      for r in json.loads(run_cli(OVERFLOW, "--format", "sarif").stdout)["runs"][0]["results"]]
    first = results[0]
    location = first["locations"][0]
    node, neuron = location["logicalLocations"][0]["name"], int(location["logicalLocations"][1]["name"].split()[1])
    expected = hashlib.sha256("\0".join([OVERFLOW.as_posix(), first["ruleId"], node, str(neuron)]).encode())
    assert prints[0] == expected.hexdigest()[:32]
    assert location["physicalLocation"]["region"] == {"startLine": 1}
    assert ". Fix: fhe-lint MODEL --fix" in first["message"]["text"]


def _suppressed_copy(tmp_path: Path, value: str) -> Path:
    m = onnx.load(OVERFLOW)
    entry = m.metadata_props.add()
    entry.key, entry.value = "fhe-lint:ignore", value
    onnx.save(m, tmp_path / "m.onnx")
    return tmp_path / "m.onnx"


def test_model_suppressions_are_said_and_can_be_refused(tmp_path):
    path = _suppressed_copy(tmp_path, "FHE002; FHE001 /seq/seq.3/*")
    _, full = lint_json(path, "--no-model-suppressions")
    hidden = len(full["files"][0]["diagnostics"])
    p = run_cli(path)
    assert p.returncode == 0
    assert p.stdout.strip() == f"All checks passed (1 file). {hidden} findings suppressed ({hidden} by model metadata)."
    refused = run_cli(path, "--no-model-suppressions")
    assert refused.returncode == 1 and "FHE001" in refused.stdout
    (tmp_path / "fhe-lint.toml").write_text("model-suppressions = false\n")
    assert run_cli(path).returncode == 1
    (tmp_path / "fhe-lint.toml").write_text('per-node-ignores = { "/seq/seq.1/*" = ["FHE002"] }\n')
    _, rep = lint_json(path, "--no-model-suppressions")
    by_config = hidden - len(rep["files"][0]["diagnostics"])
    _, rep = lint_json(path)
    assert rep["files"][0]["suppressed"] == {"config": by_config, "model metadata": hidden - by_config}


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for rel in ["a/m.onnx", "a/b/clean.onnx", "legacy/old.onnx", ".venv/lib/x.onnx", "a/notes.txt"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(CLEAN if "clean" in rel or rel.endswith(".txt") else OVERFLOW, tmp_path / rel)
    (tmp_path / "fhe-lint.toml").write_text('exclude = ["legacy"]\n')
    return tmp_path


def _paths(rep: dict, root: Path) -> list[str]:
    return [Path(f["path"]).relative_to(root).as_posix() for f in rep["files"]]


def test_a_directory_lints_every_model_under_it_minus_exclude(tree):
    _, rep = lint_json(tree)
    assert _paths(rep, tree) == ["a/b/clean.onnx", "a/m.onnx"]
    _, rep = lint_json(tree, "--exclude", "b")
    assert _paths(rep, tree) == ["a/m.onnx"]
    _, rep = lint_json(tree / "legacy" / "old.onnx")  # a file named on the command line is linted
    assert _paths(rep, tree) == ["legacy/old.onnx"]
    _, rep = lint_json(tree, "--isolated")
    assert _paths(rep, tree) == ["a/b/clean.onnx", "a/m.onnx", "legacy/old.onnx"]


def test_a_glob_the_shell_left_is_expanded_and_an_empty_one_is_an_error(tree):
    _, rep = lint_json(f"{tree}/**/*.onnx")
    assert _paths(rep, tree) == ["a/b/clean.onnx", "a/m.onnx", "legacy/old.onnx"]
    p = run_cli(f"{tree}/nothing/*.onnx", CLEAN)
    assert p.returncode == 2 and p.stderr.strip() == f"fhe-lint: error: {tree}/nothing/*.onnx: no file matches this pattern"


def test_exit_zero_keeps_findings_but_not_tool_failures(tmp_path):
    p = run_cli(OVERFLOW, "--exit-zero")
    assert p.returncode == 0 and "FHE001" in p.stdout
    (tmp_path / "bad.onnx").write_text("not a model")
    assert run_cli(OVERFLOW, tmp_path / "bad.onnx", "--exit-zero").returncode == 2


def _codes(*args) -> set[str]:
    _, rep = lint_json(*args)
    return {d["code"] for f in rep["files"] for d in f["diagnostics"]}


def test_select_takes_all_and_prefixes_and_extend_adds_to_the_config(tmp_path):
    shutil.copy(OVERFLOW, tmp_path / "m.onnx")
    m = tmp_path / "m.onnx"
    everything = _codes(m, "--isolated")
    assert everything == {"FHE001", "FHE002"}
    assert _codes(m, "--select", "ALL") == _codes(m, "--select", "FHE") == _codes(m, "--select", "FHE00") == everything
    (tmp_path / "fhe-lint.toml").write_text('select = ["FHE001"]\nignore = ["FHE004"]\n')
    assert _codes(m) == {"FHE001"}
    assert _codes(m, "--extend-select", "FHE002") == everything
    assert _codes(m, "--select", "FHE002") == {"FHE002"}
    (tmp_path / "fhe-lint.toml").write_text('ignore = ["FHE002"]\n')
    assert _codes(m, "--extend-ignore", "FHE001") == set()
    assert _codes(m, "--ignore", "FHE001") == {"FHE002"}  # --ignore replaces the config's list
    p = run_cli(m, "--select", "FHX")
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "unknown rule code or prefix FHX" in p.stderr


def test_config_option_names_the_file_for_every_model(tmp_path):
    shutil.copy(OVERFLOW, tmp_path / "m.onnx")
    (tmp_path / "fhe-lint.toml").write_text("n-max = 20\n")
    elsewhere = tmp_path / "ci" / "strict.toml"
    elsewhere.parent.mkdir()
    elsewhere.write_text("n-max = 14\n")
    _, rep = lint_json(tmp_path / "m.onnx", "--config", elsewhere)
    assert rep["files"][0]["n_max"] == 14
    p = run_cli(tmp_path / "m.onnx", "--config", tmp_path / "missing.toml")
    assert p.returncode == 2 and p.stderr.strip().endswith("missing.toml: no such configuration file")


def test_version_and_one_line_usage_errors():
    from fhe_lint import __version__

    assert run_cli("-V").stdout.strip() == f"fhe-lint, version {__version__}"
    for args in (["--bogus", str(CLEAN)], ["--n-max", "0", str(CLEAN)], ["--format", "xml", str(CLEAN)]):
        p = run_cli(*args)
        assert p.returncode == 2 and p.stderr.startswith("fhe-lint: error: ") and p.stderr.count("\n") == 1, p.stderr


@pytest.mark.parametrize(("env", "coloured"), [({"FORCE_COLOR": "1"}, True), ({"NO_COLOR": "1"}, False),
                                               ({"NO_COLOR": "1", "FORCE_COLOR": "1"}, True), ({}, False)])
def test_colours_honour_no_color_and_force_color(monkeypatch, env, coloured):
    for name in ("NO_COLOR", "FORCE_COLOR"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    out = run_cli(OVERFLOW).stdout  # not a terminal: plain unless forced
    assert ("\033[" in out) is coloured


def test_show_settings_speaks_the_configs_units(tmp_path):
    shutil.copy(CLEAN, tmp_path / "m.onnx")
    (tmp_path / "fhe-lint.toml").write_text("max-prune = 75\n")
    shown = json.loads(run_cli(tmp_path / "m.onnx", "--show-settings").stdout.split(": ", 1)[1])
    assert shown["max_prune"] == 75 and shown["max_damage"] == 5


def test_output_file_into_a_missing_directory_says_so(tmp_path):
    p = run_cli(CLEAN, "--output-file", tmp_path / "no" / "report.txt")
    assert p.returncode == 2 and p.stderr.strip().endswith(f"directory {tmp_path / 'no'} does not exist")


def test_a_text_file_as_calibration_data_is_named_as_such(tmp_path):
    (tmp_path / "x.npy").write_text("1,2,3\n")
    p = run_cli(CLEAN, "--calibration", tmp_path / "x.npy")
    assert p.returncode == 2 and "is not a NumPy .npy or .npz file" in p.stderr and "pickle" not in p.stderr
