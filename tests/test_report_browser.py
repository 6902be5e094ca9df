"""The HTML report in a real headless browser: it renders without console errors, every layer
has its bar and its table row, and no legend or label covers a bar (checked on a screenshot)."""

from __future__ import annotations

import io
import shutil

import pytest
from conftest import FIXTURES, LOSSY, lint_json, run_cli

pytest.importorskip("matplotlib")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed (dev extra)")
from fhe_lint.report.plot import BEFORE, FITS, OVERFLOWS  # noqa: E402

CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def browser():
    executable = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    with sync_api.sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        except sync_api.Error as e:
            pytest.skip(f"no headless Chromium here (system package 'chromium' or 'playwright install "
                        f"chromium'): {str(e).splitlines()[0]}")
        yield b
        b.close()


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    return tuple(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


def _check(browser, report, rep: dict, fixed: bool) -> str:
    """Every layer of every analysed model: its row, and its bar's own colour on the screenshot
    just below the bar's top (the base may be clipped by the axis); returns the page's text."""
    from PIL import Image

    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.goto(report.as_uri())
    shot = Image.open(io.BytesIO(page.screenshot(full_page=True))).convert("RGB")
    assert problems == []
    drawn = [m for m in rep["files"] if "error" not in m]
    for f, model in enumerate(drawn):
        for i, layer in enumerate(model["layers"]):
            row = page.locator(f"table[data-model='{model['path']}'] tr[data-layer='{layer['node']}']")
            cells = row.inner_text().split("\t")
            assert row.is_visible() and str(layer["accumulator_bits"]) in cells
            assert str(layer["tlu_count"]) in cells  # the cost columns: lookups per inference
            over = layer["accumulator_bits"] > model["n_max"]
            bars = [(f"bar-{f}-{i}", OVERFLOWS if over else FITS)] + ([(f"bar-before-{f}-{i}", BEFORE)] if fixed else [])
            axes = page.locator(f"[id='axes-{f}']").bounding_box()
            limit = page.locator(f"[id='limit-{f}']").bounding_box()
            for gid, colour in bars:
                box = page.locator(f"[id='{gid}']").bounding_box()
                assert box is not None and box["width"] > 5, gid
                top, bottom = box["y"] + 4, min(box["y"] + box["height"], axes["y"] + axes["height"]) - 4
                for dx in (0.2, 0.5, 0.8):
                    for dy in range(6):  # down the bar's visible part, skipping the dashed n_max line
                        x, y = box["x"] + dx * box["width"], top + dy * (bottom - top) / 5
                        if abs(y - (limit["y"] + limit["height"] / 2)) < 4:
                            continue
                        got = shot.getpixel((int(x), int(y)))
                        assert max(abs(a - b) for a, b in zip(got, _rgb(colour))) < 40, (gid, dx, dy, got, colour)
    text = page.inner_text("body")
    page.close()
    return text


def test_html_report_renders_every_layer_and_lists_unreadable_models(browser, tmp_path):
    (tmp_path / "broken.onnx").write_bytes(b"not a model")
    models = [FIXTURES / "cnn_w6a6_overflow.onnx", FIXTURES / "mlp_w7a7_overflow.onnx", tmp_path / "broken.onnx"]
    report = tmp_path / "report.html"
    assert run_cli(*models, "--plot", report).returncode == 2  # for the broken file; the others are drawn
    _, rep = lint_json(*models)
    text = _check(browser, report, rep, fixed=False)
    assert "Could not be analysed" in text and "broken.onnx: not an ONNX model" in text
    assert "fits without pruning at" in text  # the advice per failing layer


def test_html_report_of_a_fix_shows_before_and_after(browser, tmp_path):
    report = tmp_path / "report.html"
    args = [FIXTURES / "cnn_w6a6_overflow.onnx", "--select", "FHE001", "--fix", *LOSSY, "-o", tmp_path / "f.onnx"]
    assert run_cli(*args, "--plot", report).returncode == 0
    _, rep = lint_json(*args[:-2], "-o", tmp_path / "g.onnx")
    text = _check(browser, report, rep, fixed=True)
    assert "bits before --fix" in text and "weights pruned" in text and "after --fix" in text
