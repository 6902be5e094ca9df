"""A fix never loses data: crashes, read-only directories and full disks leave the original intact."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest
from conftest import FIXTURES, run_cli

from fhe_lint.io import model_io
from fhe_lint.errors import FixError

SOURCE = FIXTURES / "mlp_w6a6_unsigned_in.onnx"


@pytest.fixture
def model(tmp_path):
    path = tmp_path / "model.onnx"
    shutil.copy(SOURCE, path)
    os.chmod(path, 0o640)
    return path


def _killed_fix(path, patch: str) -> subprocess.CompletedProcess:
    """Run `fhe-lint --fix` in a child that SIGKILLs itself at the patched call."""
    code = textwrap.dedent(f"""
        import os, signal, sys
        def die(*a, **k):
            os.kill(os.getpid(), signal.SIGKILL)
        {patch}
        from fhe_lint.cli import main
        sys.argv = ["fhe-lint", {str(path)!r}, "--fix"]
        main()
    """)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("point", [
    "os.fsync = die",  # data written, not yet durable
    "os.fchmod = die",  # durable, permissions not yet set
    "os.link = die",  # complete, not yet named
])
def test_sigkill_during_the_write_leaves_the_original_and_no_temp(point, model):
    p = _killed_fix(model, point)
    assert p.returncode == -signal.SIGKILL
    assert model.read_bytes() == SOURCE.read_bytes()
    assert [f.name for f in model.parent.iterdir()] == ["model.onnx"]


def test_sigkill_after_the_rename_leaves_the_complete_fixed_model(model):
    p = _killed_fix(model, "import fhe_lint.io.model_io as m; m._fsync_dir = die")
    assert p.returncode == -signal.SIGKILL
    assert model.read_bytes() != SOURCE.read_bytes()
    assert run_cli(model).returncode == 0  # whole and valid
    assert [f.name for f in model.parent.iterdir()] == ["model.onnx"]


def _failing(errno_: int):
    def fail(*args, **kwargs):
        raise OSError(errno_, os.strerror(errno_))
    return fail


@pytest.mark.parametrize("unnamed_temp", [True, False])
def test_full_disk(unnamed_temp, model, monkeypatch):
    if not unnamed_temp:
        monkeypatch.delattr(os, "O_TMPFILE", raising=False)
    monkeypatch.setattr(os, "fsync", _failing(errno.ENOSPC))
    with pytest.raises(FixError, match="No space left"):
        model_io.write_atomic(model, b"\x08" * 100_000)
    assert model.read_bytes() == SOURCE.read_bytes()
    assert [f.name for f in model.parent.iterdir()] == ["model.onnx"]


def test_read_only_directory(model, monkeypatch):
    if os.geteuid() != 0:
        os.chmod(model.parent, 0o555)
    else:  # root ignores directory permissions: refuse creation the way a read-only mount does
        monkeypatch.setattr(model_io, "_open_temp", _failing(errno.EROFS))
    try:
        with pytest.raises(FixError, match="original is untouched"):
            model_io.write_atomic(model, b"\x08")
    finally:
        os.chmod(model.parent, 0o755)
    assert model.read_bytes() == SOURCE.read_bytes()


def test_cli_write_failure_is_one_line_exit_2(model):
    p = _killed_fix(model, "import errno; os.fsync = lambda fd: (_ for _ in ()).throw(OSError(errno.ENOSPC, 'No space left on device'))")
    assert p.returncode == 2 and p.stderr.startswith("fhe-lint: error:") and "Traceback" not in p.stderr
    assert model.read_bytes() == SOURCE.read_bytes()


def test_symlinked_model_fixes_the_target_and_keeps_the_link(model, tmp_path):
    link = tmp_path / "link.onnx"
    link.symlink_to(model)
    assert run_cli(link, "--fix").returncode == 0
    assert link.is_symlink() and os.readlink(link) == str(model)
    assert model.read_bytes() != SOURCE.read_bytes()
    assert oct(model.stat().st_mode & 0o777) == oct(0o640)  # permissions kept
