"""Tests for colearning.report.html."""

from __future__ import annotations

import base64
from pathlib import Path

from colearning.report.html import Section, Table, render_page, write_page

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==")


def test_sections_render_warning_captions_tables_and_escape(tmp_path: Path):
    figure = tmp_path / "fig.png"
    figure.write_bytes(PNG)
    page = render_page("Run <x>", [
        Section("Status", text="a & b", warning="member 2 collapsed <!>"),
        Section("Figures", figures=[figure], captions=["Fig. 2a: p<0.5"],
                tables=[Table("T", ["layer", "value"], [["ReLU1", 0.123456]])]),
    ])
    assert "<title>Run &lt;x&gt;</title>" in page
    assert '<div class="warning">member 2 collapsed &lt;!&gt;</div>' in page
    assert "<p>a &amp; b</p>" in page
    assert f"data:image/png;base64,{base64.b64encode(PNG).decode()}" in page
    assert "<figcaption>Fig. 2a: p&lt;0.5</figcaption>" in page
    assert "<td>0.1235</td>" in page
    assert "<nav>" not in page  # a table of contents only for longer pages


def test_figures_without_captions_and_navigation(tmp_path: Path):
    figure = tmp_path / "fig.png"
    figure.write_bytes(PNG)
    page = render_page("t", [Section(f"S{k}", figures=[figure]) for k in range(4)])
    assert "<figure>" not in page and page.count("<img") == 4
    assert '<a href="#s4">S3</a>' in page and '<h2 id="s4">S3</h2>' in page
    write_page(tmp_path / "r.html", page)
    assert (tmp_path / "r.html").read_text() == page
