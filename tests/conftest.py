from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
FIXTURES = HERE / "fixtures" / "brevitas"
THIRDPARTY = HERE.parent.parent / "shared" / "thirdparty"
sys.path.insert(0, str(HERE))


@pytest.fixture(scope="session")
def truth() -> dict:
    return json.loads((FIXTURES / "truth.json").read_text())


def run_cli(*args: str, cwd: Path | None = None, python: str = sys.executable) -> subprocess.CompletedProcess:
    """The real console entry point, in a fresh process, as a user or pre-commit runs it."""
    return subprocess.run([python, "-m", "fhe_lint", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=600)


def lint_json(*args: str, python: str = sys.executable) -> tuple[int, dict]:
    p = run_cli("--format", "json", *args, python=python)
    return p.returncode, json.loads(p.stdout)
