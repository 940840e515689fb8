"""Human reports: a self-contained HTML page (inline PNG figures, tables) beside a JSON of the numbers."""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .fileio import atomic_write_text


def figure_to_png_bytes(fig: Any, dpi: int = 110) -> bytes:
    """Render a matplotlib figure to PNG bytes (Agg backend, nothing shown)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def array_to_png_bytes(img: np.ndarray) -> bytes:
    """Encode an HxW or HxWx3 uint8 array as PNG bytes."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(img, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def image_grid(rows: Sequence[Sequence[np.ndarray]], pad: int = 2, bg: int = 255) -> np.ndarray:
    """Tile equally sized HxWx3 uint8 images into one grid image (rows of columns)."""
    h, w = rows[0][0].shape[:2]
    ncol = max(len(r) for r in rows)
    out = np.full(((h + pad) * len(rows) + pad, (w + pad) * ncol + pad, 3), bg, np.uint8)
    for i, r in enumerate(rows):
        for j, im in enumerate(r):
            im = np.asarray(im)
            if im.ndim == 2:
                im = np.repeat(im[..., None], 3, axis=2)
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            out[y:y + h, x:x + w] = im[:h, :w, :3]
    return out


@dataclass
class HtmlReport:
    """Collects headings, paragraphs, tables and figures; ``write`` saves one standalone HTML file."""

    title: str
    parts: list[str] = field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> None:
        self.parts.append(f"<h{level}>{html.escape(text)}</h{level}>")

    def paragraph(self, text: str) -> None:
        self.parts.append(f"<p>{html.escape(text)}</p>")

    def table(self, rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> None:
        if not rows:
            return
        cols = list(columns or rows[0].keys())
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
        body = []
        for r in rows:
            cells = []
            for c in cols:
                v = r.get(c, "")
                if isinstance(v, float | np.floating):
                    v = f"{float(v):.4g}"
                cells.append(f"<td>{html.escape(str(v))}</td>")
            body.append("<tr>" + "".join(cells) + "</tr>")
        self.parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")

    def png(self, data: bytes, caption: str = "") -> None:
        b64 = base64.b64encode(data).decode("ascii")
        cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
        self.parts.append(f'<figure><img src="data:image/png;base64,{b64}"/>{cap}</figure>')

    def figure(self, fig: Any, caption: str = "") -> None:
        self.png(figure_to_png_bytes(fig), caption)

    def image(self, img: np.ndarray, caption: str = "") -> None:
        self.png(array_to_png_bytes(img), caption)

    def render(self) -> str:
        style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
                 "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:3px 8px;"
                 "text-align:right}th{background:#eee}img{max-width:100%}figcaption{color:#555;font-size:90%}")
        return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title>"
                f"<style>{style}</style></head><body><h1>{html.escape(self.title)}</h1>"
                + "\n".join(self.parts) + "</body></html>\n")

    def write(self, path: str | os.PathLike) -> Path:
        return atomic_write_text(path, self.render())
