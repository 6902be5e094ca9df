from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
FIXTURES = HERE / "fixtures" / "brevitas"
THIRDPARTY = HERE.parent.parent / "shared" / "thirdparty"
sys.path.insert(0, str(HERE))
# Tests of how a fix is made (not of whether its cost is acceptable) lift the no-data damage cap.
LOSSY = ("--max-damage", "100")


@pytest.fixture(autouse=True, scope="session")
def _no_user_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Estimates read this machine's cost calibration from the user cache: tests see none."""
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def truth() -> dict:
    return json.loads((FIXTURES / "truth.json").read_text())


def run_cli(*args: str, cwd: Path | None = None, python: str = sys.executable,
            subprocess_: bool = False) -> subprocess.CompletedProcess:
    """The console entry point with these arguments: in this process (click's runner) unless
    another interpreter or a real process is asked for (``subprocess_=True``, for the few
    end-to-end tests of process start-up, signals and pre-commit)."""
    if subprocess_ or python != sys.executable:
        return subprocess.run([python, "-m", "fhe_lint", *map(str, args)], capture_output=True, text=True,
                              cwd=cwd, timeout=600)
    from click.testing import CliRunner

    from fhe_lint.cli import main

    previous = Path.cwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        r = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    finally:
        os.chdir(previous)
    return subprocess.CompletedProcess(args, r.exit_code, r.stdout, r.stderr)


def lint_json(*args: str, python: str = sys.executable) -> tuple[int, dict]:
    p = run_cli("--format", "json", *args, python=python)
    return p.returncode, json.loads(p.stdout)
