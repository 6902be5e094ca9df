"""--plot: PNG, SVG and a self-contained HTML report, before and after --fix."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import pytest
from conftest import LOSSY, FIXTURES, run_cli

pytest.importorskip("matplotlib")
SOURCE = FIXTURES / "cnn_w6a6_overflow.onnx"


def test_png_and_svg(tmp_path):
    assert run_cli(SOURCE, "--plot", tmp_path / "p.png").returncode == 1  # findings still decide the exit
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert run_cli(SOURCE, "--select", "FHE001", "--fix", *LOSSY, "-o", tmp_path / "f.onnx", "--plot", tmp_path / "p.svg").returncode == 0
    root = ET.parse(tmp_path / "p.svg").getroot()
    assert root.tag.endswith("svg")
    assert b"before --fix" in (tmp_path / "p.svg").read_bytes()


def test_html_is_one_self_contained_file(tmp_path):
    out = tmp_path / "report.html"
    assert run_cli(SOURCE, "--plot", out).returncode == 1
    text = out.read_text()

    class Collect(HTMLParser):
        tags: list[str] = []
        external: list[str] = []

        def handle_starttag(self, tag, attrs):
            self.tags.append(tag)
            self.external += [v for k, v in attrs if k in ("src", "href") and v and not v.startswith("#")]

    parser = Collect()
    parser.feed(text)
    assert {"html", "svg", "table"} <= set(parser.tags) and parser.external == []
    assert "/c2/Conv" in text and "/fc/Gemm" in text
    assert "<p class='cost'>FHE cost: " in text  # the same sentence as --layers


def test_bad_plot_suffix_is_exit_2(tmp_path):
    p = run_cli(SOURCE, "--plot", tmp_path / "p.gif")
    assert p.returncode == 2 and "use a .png, .svg or .html" in p.stderr


def test_nothing_to_draw_writes_no_picture(tmp_path):
    (tmp_path / "broken.onnx").write_bytes(b"not a model")
    out = tmp_path / "p.html"
    p = run_cli(tmp_path / "broken.onnx", "--plot", out)
    assert p.returncode == 2 and not out.exists()
    assert p.stderr.strip().splitlines()[-1].endswith("no model with a layer of known range to draw; nothing written")
