"""The README's console examples are run as written and must print exactly what they show, so
the documentation cannot drift from the tool (an example that hid 90 lines once did)."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest
from conftest import run_cli

ROOT = Path(__file__).resolve().parent.parent


def _examples() -> list[tuple[str, list[str]]]:
    """(command, expected output lines) for each ``$ fhe-lint ...`` in a console block."""
    out: list[tuple[str, list[str]]] = []
    for block in re.findall(r"```console\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S):
        for chunk in re.split(r"^\$ ", block, flags=re.M)[1:]:
            command, *printed = chunk.rstrip("\n").split("\n")
            out.append((command, [line for line in printed if line]))
    return out


EXAMPLES = _examples()


def test_the_readme_has_console_examples():
    assert len(EXAMPLES) >= 2 and all(cmd.startswith("fhe-lint ") for cmd, _ in EXAMPLES)


@pytest.mark.parametrize(("command", "expected"), EXAMPLES, ids=[c for c, _ in EXAMPLES])
def test_console_example_prints_what_the_readme_shows(command, expected, tmp_path):
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    p = run_cli(*shlex.split(command)[1:], cwd=tmp_path)
    assert [line.rstrip() for line in p.stdout.splitlines() if line] == [line.rstrip() for line in expected]
