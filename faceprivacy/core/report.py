"""Human reports: one self-contained HTML page template (inline PNG figures, tables) beside a JSON of the
numbers, for every report of every system.

The page reads top-down: title, a findings box with the verdict ("re-identification after defacing: 2 of 2
subjects still matched"), warnings (small n), then the evidence. Table columns get readable labels with unit
and direction ("TAR at FAR 1e-3 ↑ higher is better") from :data:`COLUMNS` (code names keep working), numbers
are rounded to their precision, and wide tables scroll inside the page instead of running off it."""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import math
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


@dataclass(frozen=True)
class Column:
    """How a table column reads: label, unit, direction (``higher`` / ``lower`` / a target like ``0.5``)."""

    label: str
    unit: str = ""
    better: str | None = None
    digits: int | None = None  #: fixed decimals; None = 3 significant digits

    def header(self) -> str:
        unit = f" ({self.unit})" if self.unit else ""
        return self.label + unit

    def hint(self) -> str:
        if self.better in ("higher", "lower"):
            return f"{'↑' if self.better == 'higher' else '↓'} {self.better} is better"
        return f"goal {self.better}" if self.better else ""


#: readable labels of the code names the reports use (a key not here is humanised: ``a_b`` -> "a b")
COLUMNS: dict[str, Column] = {
    # verification
    "tar@far=0.001": Column("TAR at FAR 1e-3", better="higher"),
    "tar@far=1e-3": Column("TAR at FAR 1e-3", better="higher"),
    "tar@far=0.01": Column("TAR at FAR 1e-2", better="higher"),
    "tar@far=1e-2": Column("TAR at FAR 1e-2", better="higher"),
    "tar@far=0.0001": Column("TAR at FAR 1e-4", better="higher"),
    "TAR@FAR": Column("TAR at the FAR", better="higher"),
    "eer": Column("EER", better="lower"), "EER": Column("EER", better="lower"),
    "auc": Column("ROC AUC", better="higher"),
    "pairs10fold_acc": Column("10-fold pair accuracy", better="higher"),
    "gain_tar@1e-3_points": Column("TAR gain vs start", "points", better="higher", digits=2),
    "mean_impostor": Column("mean impostor similarity", better="lower"),
    "threshold": Column("threshold (cosine)"),
    # de-identification (a rate of faces still matched: lower is better for privacy)
    "rank1": Column("re-identified, rank-1", "rate", better="lower"),
    "verif_vs_other_photos": Column("matched to other photos of the person", "rate", better="lower"),
    "verif_vs_source": Column("matched to the source photo", "rate", better="lower"),
    "verif_vs_anonymized": Column("wrong key matches the anonymized face", "rate", better="lower"),
    "diversity_keyA_vs_keyB_verified": Column("two keys give the same person", "rate", better="lower"),
    "diversity_keyA_vs_keyC_verified": Column("two keys give the same person (3rd key)", "rate", better="lower"),
    "mean_cos_keyA_vs_keyB": Column("cosine between two keys' outputs", better="lower"),
    "two_outputs_verified_same": Column("two outputs verified as one person", "rate"),
    "mean_cos_two_outputs": Column("cosine between the two outputs"),
    "ssim": Column("SSIM to the source", better="higher"),
    "age_mae_years": Column("age error", "years", better="lower", digits=1),
    "gender_agreement": Column("gender kept", "rate", better="higher"),
    "landmark_nme": Column("landmark error (NME)", better="lower"),
    "yaw_proxy_abs_diff": Column("head-pose change (yaw proxy)", better="lower"),
    # embedding audit
    "probe": Column("probe accuracy / R²"), "trivial": Column("trivial baseline (chance)"),
    "lift": Column("lift over chance", better="lower"), "n_train": Column("n train"), "n_test": Column("n test"),
    "type1_rate": Column("type I match rate", better="lower"), "type2_rate": Column("type II match rate",
                                                                                     better="lower"),
    "linkage_auc": Column("linkage AUC", better="0.5"),
    # MRI
    "MSD mm": Column("face surface distance", "mm", better="higher", digits=1),
    "total_s": Column("time", "s", better="lower", digits=1),
    "brain_voxels_removed": Column("brain voxels removed", better="0"),
    "face_coverage": Column("face removed", "fraction", better="higher"),
    "dlib HOG detects": Column("face detected in renders", "rate", better="lower"),
    # unlearning
    "ToW": Column("ToW (vs retraining)", better="higher"), "ToW_std": Column("ToW sd"),
    "MIA_AUC": Column("MIA AUC", better="0.5"), "MIA_AUC_std": Column("MIA AUC sd"),
    "MIA_acc": Column("MIA accuracy", better="0.5"), "NoMUS": Column("NoMUS", better="higher"),
    "retain_acc": Column("retain accuracy", better="higher"), "forget_acc": Column("forget accuracy"),
    "test_acc": Column("test accuracy", better="higher"), "seconds": Column("time", "s", better="lower"),
    "n_seeds": Column("n seeds"),
    # generator
    "psnr_mean": Column("PSNR", "dB", better="higher", digits=1), "ssim_mean": Column("SSIM", better="higher"),
    "recon_mobilefacenet_pass@far1e-3": Column("reconstructions matched by MobileFaceNet at FAR 1e-3", "rate",
                                               better="higher"),
    "recon_dlib_pass@0.6": Column("reconstructions within dlib distance 0.6", "rate", better="higher"),
    "recon_dlib_dist_mean": Column("dlib distance of reconstructions", better="lower"),
    "recon_mobilefacenet_cos_mean": Column("MobileFaceNet cosine of reconstructions", better="higher"),
    "samples_hog_detect_rate": Column("random samples with a detected face", "rate", better="higher"),
    "real_hog_detect_rate": Column("real photos with a detected face", "rate"),
    "kid_samples_vs_real_mfn": Column("KID samples vs real (MobileFaceNet features)", better="lower"),
    "kid_recon_vs_real_mfn": Column("KID reconstructions vs real (MobileFaceNet features)", better="lower"),
    "recon_s_per_face": Column("reconstruction time per face", "s", better="lower"),
}


def rounded(obj: Any, sig: int = 3) -> Any:
    """``obj`` with every float rounded to ``sig`` significant digits (for numbers quoted in text)."""
    if isinstance(obj, float | np.floating):
        f = float(obj)
        return f if not math.isfinite(f) or f == 0 else round(f, sig - 1 - int(math.floor(math.log10(abs(f)))))
    if isinstance(obj, Mapping):
        return {k: rounded(v, sig) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [rounded(v, sig) for v in obj]
    return obj


def label_for(key: str) -> Column:
    """The :class:`Column` of a code name (registered, else humanised)."""
    if key in COLUMNS:
        return COLUMNS[key]
    return Column(str(key).replace("_", " ").replace("@", " at "))


def fmt_value(v: Any, col: Column | None = None) -> str:
    """A cell for people: 3 significant digits (or the column's decimals), no float noise, n/a for NaN/None."""
    if v is None:
        return "n/a"
    if isinstance(v, bool | np.bool_):
        return "yes" if v else "no"
    if isinstance(v, int | np.integer):
        return f"{int(v):,}" if abs(int(v)) >= 10_000 else str(int(v))
    if isinstance(v, float | np.floating):
        f = float(v)
        if math.isnan(f):
            return "n/a"
        if math.isinf(f):
            return "∞" if f > 0 else "-∞"
        if col is not None and col.digits is not None:
            return f"{f:.{col.digits}f}"
        if f == 0:
            return "0"
        if abs(f) >= 100:
            return f"{f:,.0f}"
        return f"{f:#.3g}".rstrip(".") if abs(f) >= 0.001 else f"{f:.2e}"  # 0.780, not 0.78: same width
    if isinstance(v, list | tuple) and all(isinstance(x, int | float | np.number) for x in v) and len(v) <= 8:
        return "[" + ", ".join(fmt_value(x) for x in v) + "]"
    return str(v)


def rate_text(k: int, n: int, chance: float | None = None) -> str:
    """``0.714 (5/7; chance 0.200)``: a rate never goes without its n and, where there is one, its chance level."""
    r = k / n if n else float("nan")
    ch = f"; chance {fmt_value(float(chance))}" if chance is not None else ""
    return f"{fmt_value(r)} ({k}/{n}{ch})"


#: below this many people/subjects a rate gets a warning
SMALL_N = 30


@dataclass
class Card:
    """One system on the demo index: headline number, before/after thumbnails, link to its report."""

    title: str
    headline: str
    detail: str = ""
    href: str | None = None
    images: list[tuple[str, bytes]] = field(default_factory=list)  #: (caption, PNG bytes)
    status: str = "ok"  #: ok | warn | error | skipped


@dataclass
class HtmlReport:
    """Collects findings, headings, paragraphs, tables and figures; ``write`` saves one standalone HTML file."""

    title: str
    parts: list[str] = field(default_factory=list)
    finding_items: list[str] = field(default_factory=list)
    verdict: str | None = None
    verdict_level: str = "info"
    subtitle: str = ""

    def findings(self, items: Sequence[str], verdict: str | None = None, level: str = "info") -> None:
        """The box at the top of the page: a one-line verdict and 1-5 findings (plain sentences with numbers).
        ``level``: ``good`` (target met), ``bad`` (privacy or safety target missed), ``warn`` or ``info``."""
        self.finding_items += [str(i) for i in items]
        if verdict is not None:
            self.verdict, self.verdict_level = verdict, level

    def warn(self, text: str) -> None:
        self.parts.append(f"<div class='warn'>⚠ {html.escape(text)}</div>")

    def small_n(self, n: int, what: str = "people", min_n: int = SMALL_N) -> bool:
        """Warn (and return True) when a rate rests on fewer than ``min_n`` ``what``."""
        if n < min_n:
            msg = (f"small sample: n = {n} {what}; one more or fewer changes a rate by {1 / max(n, 1):.2f}. "
                   f"Read the numbers as examples, not estimates (goal: n ≥ {min_n}).")
            self.finding_items.append(msg)
            return True
        return False

    def heading(self, text: str, level: int = 2) -> None:
        self.parts.append(f"<h{level}>{html.escape(text)}</h{level}>")

    def paragraph(self, text: str) -> None:
        self.parts.append(f"<p>{html.escape(text)}</p>")

    def link(self, href: str, text: str) -> None:
        self.parts.append(f"<p><a href='{html.escape(href)}'>{html.escape(text)}</a></p>")

    def table(self, rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None, *,
              labels: Mapping[str, Column | str] | None = None, caption: str = "", n: int | None = None,
              chance: float | None = None) -> None:
        """A table with readable headers (label, unit, direction) and rounded cells; scrolls when wide.
        ``n`` and ``chance`` go into the caption, so every rate in the table is read against them."""
        if not rows:
            return
        cols = list(columns or dict.fromkeys(c for r in rows for c in r))
        specs = {}
        for c in cols:
            lab = (labels or {}).get(c)
            specs[c] = Column(lab) if isinstance(lab, str) else (lab or label_for(c))
        head = "".join(
            f"<th title='{html.escape(str(c))}'>{html.escape(specs[c].header())}"
            + (f"<br><span class='dir'>{html.escape(specs[c].hint())}</span>" if specs[c].hint() else "") + "</th>"
            for c in cols)
        body = []
        for r in rows:
            cells = []
            for j, c in enumerate(cols):
                v = r.get(c, "")
                if c == "metric" and isinstance(v, str):
                    v = label_for(v).header() + (f" — {label_for(v).hint()}" if label_for(v).hint() else "")
                txt = fmt_value(v, specs[c]) if v != "" else ""
                cls = " class='l'" if j == 0 or not isinstance(v, int | float | np.number) else ""
                cells.append(f"<td{cls}>{html.escape(txt)}</td>")
            body.append("<tr>" + "".join(cells) + "</tr>")
        cap_bits = [caption] if caption else []
        if n is not None:
            cap_bits.append(f"n = {n}")
        if chance is not None:
            cap_bits.append(f"chance level {fmt_value(float(chance))}")
        cap = f"<caption>{html.escape('; '.join(cap_bits))}</caption>" if cap_bits else ""
        self.parts.append(f"<div class='scroll'><table>{cap}<thead><tr>{head}</tr></thead>"
                          f"<tbody>{''.join(body)}</tbody></table></div>")

    def png(self, data: bytes, caption: str = "") -> None:
        b64 = base64.b64encode(data).decode("ascii")
        cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
        self.parts.append(f'<figure><img src="data:image/png;base64,{b64}"/>{cap}</figure>')

    def figure(self, fig: Any, caption: str = "") -> None:
        self.png(figure_to_png_bytes(fig), caption)

    def image(self, img: np.ndarray, caption: str = "") -> None:
        self.png(array_to_png_bytes(img), caption)

    def cards(self, cards: Sequence[Card]) -> None:
        """A grid of system cards (the demo index)."""
        out = []
        for c in cards:
            imgs = "".join(
                f"<figure><img src='data:image/png;base64,{base64.b64encode(b).decode('ascii')}'/>"
                f"<figcaption>{html.escape(cap)}</figcaption></figure>" for cap, b in c.images)
            link = (f"<a class='open' href='{html.escape(c.href)}'>open the report →</a>" if c.href else "")
            out.append(f"<div class='card {html.escape(c.status)}'><h3>{html.escape(c.title)}</h3>"
                       f"<div class='headline'>{html.escape(c.headline)}</div>"
                       f"<div class='thumbs'>{imgs}</div><p>{html.escape(c.detail)}</p>{link}</div>")
        self.parts.append(f"<div class='cards'>{''.join(out)}</div>")

    def render(self) -> str:
        from .. import __version__

        style = (
            "body{font-family:system-ui,sans-serif;max-width:1180px;margin:1.5em auto;padding:0 1em;color:#222;"
            "line-height:1.4}h1{margin-bottom:.1em}.sub{color:#666;margin-top:0}"
            ".findings{border:2px solid #4a7;background:#f3fbf5;border-radius:6px;padding:.6em 1em;margin:1em 0}"
            ".findings.bad{border-color:#c44;background:#fdf2f2}.findings.warn{border-color:#d90;background:#fffaeb}"
            ".findings.info{border-color:#68a;background:#f3f7fb}.findings .verdict{font-weight:600;font-size:1.1em}"
            ".findings ul{margin:.3em 0 0 1.1em;padding:0}"
            ".warn{border-left:4px solid #d90;background:#fffaeb;padding:.4em .8em;margin:.8em 0}"
            ".scroll{overflow-x:auto;max-width:100%;margin:1em 0}"
            "table{border-collapse:collapse;font-size:14px}td,th{border:1px solid #ccc;padding:3px 8px;"
            "text-align:right;white-space:nowrap}td.l{text-align:left}th{background:#eee;vertical-align:bottom;"
            "white-space:normal;min-width:4em;max-width:13em}"
            "th .dir{font-weight:normal;color:#666;font-size:85%}caption{caption-side:bottom;text-align:left;"
            "color:#555;font-size:90%;padding-top:.3em}img{max-width:100%}figure{margin:1em 0}"
            "figcaption{color:#555;font-size:90%}"
            ".cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(360px,1fr));gap:14px}"
            ".card{border:1px solid #ccc;border-radius:8px;padding:.6em .9em;border-top:5px solid #4a7}"
            ".card.warn{border-top-color:#d90}.card.error{border-top-color:#c44}.card.skipped{border-top-color:#aaa}"
            ".card h3{margin:.2em 0}.card .headline{font-size:1.15em;font-weight:600;margin:.2em 0 .4em}"
            ".card .thumbs{display:flex;gap:6px}.card .thumbs figure{margin:0;flex:0 1 auto;min-width:0}"
            ".card .thumbs img{max-height:150px;height:auto;width:auto;max-width:100%;border:1px solid #ddd}.card p{color:#444;"
            "font-size:92%}.open{font-weight:600}")
        box = ""
        if self.verdict or self.finding_items:
            verdict = f"<div class='verdict'>{html.escape(self.verdict)}</div>" if self.verdict else ""
            items = "".join(f"<li>{html.escape(i)}</li>" for i in self.finding_items)
            box = (f"<div class='findings {html.escape(self.verdict_level)}'>{verdict}"
                   + (f"<ul>{items}</ul>" if items else "") + "</div>")
        when = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
        sub = f"{html.escape(self.subtitle)} · " if self.subtitle else ""
        return (f"<!doctype html><html><head><meta charset='utf-8'>"
                f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
                f"<title>{html.escape(self.title)}</title><style>{style}</style></head><body>"
                f"<h1>{html.escape(self.title)}</h1><p class='sub'>{sub}faceprivacy {__version__} · {when}</p>"
                + box + "\n".join(self.parts) + "</body></html>\n")

    def write(self, path: str | os.PathLike) -> Path:
        return atomic_write_text(path, self.render())
