"""The pre-commit hook, run for real with `pre-commit try-repo` in a throw-away git repository."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import FIXTURES

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(shutil.which("pre-commit") is None or shutil.which("git") is None,
                                reason="pre-commit and git are needed")


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    home = tmp_path_factory.mktemp("pre-commit-home")
    return {**os.environ, "PRE_COMMIT_HOME": str(home), "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
            "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}


def _user_repo(path: Path, models: list[str], env: dict[str, str]) -> Path:
    path.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=path, check=True, env=env)
    for name in models:
        shutil.copy(FIXTURES / f"{name}.onnx", path / f"{name}.onnx")
    subprocess.run(["git", "add", "."], cwd=path, check=True, env=env)
    return path


def _try_repo(cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["pre-commit", "try-repo", str(REPO), "fhe-lint", "--all-files"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)


def test_hook_fails_on_overflow_and_passes_on_clean(tmp_path, env):
    bad = _try_repo(_user_repo(tmp_path / "bad", ["mlp_w2a2", "mlp_w6a6_unsigned_in"], env), env)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "FHE001" in bad.stdout and "mlp_w6a6_unsigned_in.onnx" in bad.stdout
    printed = [x for x in bad.stdout.split("- exit code: 1", 1)[1].splitlines() if x.strip()]
    assert len(printed) <= 15, printed  # a blocked commit says what and where, not a wall of neurons
    good = _try_repo(_user_repo(tmp_path / "good", ["mlp_w2a2", "cnn_w3a3"], env), env)
    assert good.returncode == 0, good.stdout + good.stderr
    assert "Passed" in good.stdout
