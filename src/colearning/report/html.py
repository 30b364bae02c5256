"""A self-contained HTML page (figures embedded as base64 PNG) from report sections.

    page = render_page("Run runs/demo", [
        Section("Learning curves", figures=[Path("out/curves.png")], text="..."),
        Section("Table S3", tables=[Table("Activation", ["layer", "sparsity"], rows)]),
    ])
    write_page(out / "report.html", page)
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from colearning.rundir import atomic_write_text

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; }
img { max-width: 100%; border: 1px solid #eee; margin: .5em 0; }
table { border-collapse: collapse; margin: .5em 0 1.5em; font-size: .9em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: right; }
th { background: #f4f4f4; } td:first-child, th:first-child { text-align: left; }
caption { caption-side: top; text-align: left; font-weight: 600; padding: .3em 0; }
pre { background: #f7f7f7; padding: 1em; overflow-x: auto; font-size: .85em; }
.warning { background: #fff3cd; border: 1px solid #e0a800; border-left: 6px solid #e0a800;
  padding: .6em 1em; margin: .8em 0; }
figure { margin: 1em 0; } figcaption { font-size: .9em; color: #444; }
nav ul { columns: 2; font-size: .9em; }
"""


@dataclass
class Table:
    """A captioned table: ``rows`` are lists of cells (numbers are formatted with ``fmt``)."""

    caption: str
    header: Sequence[str]
    rows: Sequence[Sequence[Any]]
    fmt: str = "{:.4g}"


@dataclass
class Section:
    """One heading with optional text, figures (PNG paths), tables and preformatted text.

    ``warning`` is shown in a highlighted box under the heading; ``captions`` (optional)
    are the figures' captions, in the same order as ``figures``.
    """

    title: str
    text: str = ""
    figures: list[Path] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    pre: str = ""
    warning: str = ""
    captions: list[str] = field(default_factory=list)


def _cell(value: Any, fmt: str) -> str:
    if isinstance(value, float):
        return html.escape(fmt.format(value))
    return html.escape(str(value))


def _table(table: Table) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in table.header)
    body = "".join(
        "<tr>" + "".join(f"<td>{_cell(v, table.fmt)}</td>" for v in row) + "</tr>"
        for row in table.rows
    )
    caption = html.escape(table.caption)
    return f"<table><caption>{caption}</caption><tr>{head}</tr>{body}</table>"


def _figure(path: Path, caption: str = "") -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    alt = html.escape(Path(path).stem)
    image = f'<img alt="{alt}" src="data:image/png;base64,{data}">'
    if not caption:
        return image
    return f"<figure>{image}<figcaption>{html.escape(caption)}</figcaption></figure>"


def _anchor(index: int) -> str:
    return f"s{index + 1}"


def render_page(title: str, sections: Sequence[Section]) -> str:
    """The whole HTML document as a string; every figure is embedded, nothing is linked."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
             f"</title><style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"]
    if len(sections) > 3:
        links = "".join(f'<li><a href="#{_anchor(k)}">{html.escape(s.title)}</a></li>'
                        for k, s in enumerate(sections))
        parts.append(f"<nav><ul>{links}</ul></nav>")
    for k, section in enumerate(sections):
        parts.append(f'<h2 id="{_anchor(k)}">{html.escape(section.title)}</h2>')
        if section.warning:
            parts.append(f'<div class="warning">{html.escape(section.warning)}</div>')
        if section.text:
            parts.append(f"<p>{html.escape(section.text)}</p>")
        captions = list(section.captions) + [""] * len(section.figures)
        parts.extend(_figure(path, caption)
                     for path, caption in zip(section.figures, captions, strict=False))
        parts.extend(_table(table) for table in section.tables)
        if section.pre:
            parts.append(f"<pre>{html.escape(section.pre)}</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_page(path: str | Path, page: str) -> None:
    atomic_write_text(path, page)
