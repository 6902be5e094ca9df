"""Which files a run lints: the paths given, every ``.onnx`` under a directory given, and the
matches of a glob the shell left unexpanded (a quoted pattern, or a Windows shell).

As in ruff, ``exclude`` applies to what a directory walk finds, never to a file named on the
command line (a pre-commit hook names each file and has its own ``exclude``).
"""

from __future__ import annotations

import fnmatch
import glob
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fhe_lint.config import relative_to

MODEL_SUFFIX = ".onnx"
# folders no model of the project lives in: version control, environments, caches
ALWAYS_EXCLUDED = (".git", ".hg", ".svn", ".venv", "venv", ".tox", ".nox", "node_modules", "__pycache__",
                   "site-packages", ".mypy_cache", ".pytest_cache")
_GLOB_CHARS = frozenset("*?[")


@dataclass
class Discovered:
    files: list[Path] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # a pattern that matches nothing: exit 2
    warnings: list[str] = field(default_factory=list)  # a directory without models: said, not fatal


def discover(args: Sequence[Path], exclusion: Callable[[Path], tuple[Path, tuple[str, ...]]]) -> Discovered:
    """``exclusion(directory)`` gives the root the ``exclude`` globs are relative to and the globs."""
    out = Discovered()
    seen: set[Path] = set()

    def add(path: Path) -> None:
        if path not in seen:
            seen.add(path)
            out.files.append(path)

    for arg in args:
        if not arg.exists() and _GLOB_CHARS & set(str(arg)):
            matches = sorted(glob.glob(str(arg), recursive=True))
            if not matches:
                out.errors.append(f"{arg}: no file matches this pattern")
            for m in map(Path, matches):
                for f in (sorted(_walk(m, *exclusion(m))) if m.is_dir() else [m]):
                    add(f)
        elif arg.is_dir():
            found = sorted(_walk(arg, *exclusion(arg)))
            if not found:
                out.warnings.append(f"{arg}: no {MODEL_SUFFIX} model under this directory")
            for f in found:
                add(f)
        else:
            add(arg)
    return out


def _walk(directory: Path, root: Path, exclude: tuple[str, ...]) -> Iterator[Path]:
    """Every model under ``directory``, pruning excluded folders (symlinked folders are not
    followed, so a link cycle cannot trap the walk)."""
    for parent, dirs, names in os.walk(directory):
        dirs[:] = [d for d in dirs if d not in ALWAYS_EXCLUDED and not excluded(Path(parent, d), root, exclude)]
        for name in names:
            path = Path(parent, name)
            if name.endswith(MODEL_SUFFIX) and path.is_file() and not excluded(path, root, exclude):
                yield path


def excluded(path: Path, root: Path, exclude: tuple[str, ...]) -> bool:
    """A glob excludes a path if it matches the path relative to ``root`` or any one of its
    components (``legacy`` skips every folder of that name, ``legacy/*.onnx`` one folder's models)."""
    if not exclude:
        return False
    relative = relative_to(path, root)
    candidates = [relative, *relative.split("/")]
    return any(fnmatch.fnmatchcase(c, g) for c in candidates for g in exclude)
