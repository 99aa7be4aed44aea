"""A self-contained HTML page of token perception: every response with its tokens shaded.

One file, no server, no scripts, no external resources: inline CSS, plots and image thumbnails
as ``data:`` URIs, and every piece of model text escaped. Each token is a ``<span>`` whose
background encodes its visual dependency (log-scaled, see the legend), whose underline marks
the top-k% tokens that TGF keeps, and whose tooltip shows its scores.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from vppo.algorithm import tgf_mask
from vppo.analysis.scoring import ResponseRecord

__all__ = ["ColourScale", "display_text", "render_html", "write_html"]

_LOW = (255, 255, 255)
_HIGH = (205, 52, 28)
_THUMBNAIL_SIDE = 160  # stored pixels (long side)
_THUMBNAIL_SHOWN = 96  # displayed CSS pixels (long side)

_CSS = """
:root { --ink: #1f2328; --muted: #5d6470; --line: #d8dde3; --sel: rgba(25, 70, 150, 0.7); --card: #ffffff; }
* { box-sizing: border-box; }
body { margin: 0; padding: 24px 28px 48px; background: #f4f5f7; color: var(--ink);
  font: 14px/1.45 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
h1 { font-size: 21px; margin: 0 0 4px; }
h2 { font-size: 15px; margin: 0 0 10px; }
.meta { color: var(--muted); margin: 0 0 18px; }
.meta code { background: #e8eaee; padding: 1px 5px; border-radius: 4px; }
.panel { background: var(--card); border: 1px solid var(--line); border-radius: 8px;
  padding: 14px 16px; margin: 0 0 16px; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(270px, 1fr)); gap: 14px 26px; }
.group h3 { font-size: 12px; text-transform: uppercase; letter-spacing: 0.04em; color: var(--muted);
  margin: 0 0 4px; }
.stat { display: flex; justify-content: space-between; gap: 10px; border-bottom: 1px dotted var(--line);
  padding: 2px 0; }
.stat .k { color: var(--muted); }
.stat .v { font-variant-numeric: tabular-nums; font-weight: 600; }
.legend { display: flex; flex-wrap: wrap; align-items: center; gap: 18px; }
.scale { width: 300px; }
.bar { height: 14px; border: 1px solid var(--line); border-radius: 3px; }
.ticks { display: flex; justify-content: space-between; font-size: 11px; color: var(--muted); }
.plots { display: grid; grid-template-columns: repeat(auto-fill, minmax(360px, 1fr)); gap: 12px; }
.plots figure { margin: 0; }
.plots img { width: 100%; border: 1px solid var(--line); border-radius: 6px; background: #fff; }
.plots figcaption { font-size: 12px; color: var(--muted); }
table.top { border-collapse: collapse; font-size: 13px; }
table.top th, table.top td { padding: 2px 10px; border-bottom: 1px solid var(--line); text-align: right; }
table.top th:first-child, table.top td:first-child { text-align: left; }
table.top code { background: #f0f1f4; padding: 0 4px; border-radius: 3px; white-space: pre; }
.response { background: var(--card); border: 1px solid var(--line); border-radius: 8px;
  margin: 0 0 14px; overflow: hidden; }
.rhead { display: flex; flex-wrap: wrap; align-items: center; gap: 6px 14px; padding: 8px 14px;
  background: #f8f9fb; border-bottom: 1px solid var(--line); font-size: 13px; }
.rhead .id { font-weight: 700; }
.rhead .traj { font-variant-numeric: tabular-nums; }
.badge { border-radius: 10px; padding: 1px 9px; font-size: 12px; font-weight: 600; }
.badge.ok { background: #dcf2e3; color: #17663a; }
.badge.bad { background: #fbe1de; color: #a12a1d; }
.badge.na { background: #e8eaee; color: var(--muted); }
.question { padding: 6px 14px 0; font-size: 13px; color: var(--muted); }
.body { display: flex; gap: 4px; align-items: flex-start; }
.images { padding: 10px 0 10px 14px; display: flex; flex-direction: column; gap: 4px; }
.question summary { cursor: pointer; }
.question pre { white-space: pre-wrap; margin: 6px 0; font: inherit; color: var(--ink); }
.thumb { display: block; border: 1px solid var(--line); border-radius: 3px;
  background-size: 100% 100%; image-rendering: pixelated; }
.tokens { flex: 1; padding: 10px 14px 14px; white-space: pre-wrap; word-break: break-word;
  font: 13.5px/1.9 "SFMono-Regular", Menlo, Consolas, "DejaVu Sans Mono", monospace; }
.t { border-radius: 2px; padding: 1px 0; }
.t.sel { box-shadow: inset 0 -2px 0 var(--sel); }
.t.hot { color: #ffffff; }
.t.empty { display: inline-block; width: 3px; height: 1em; vertical-align: -2px; }
.sample.t { padding: 1px 6px; }
.note { color: var(--muted); font-size: 12px; }
"""


# C0 controls (except tab and newline) and DEL are invalid in HTML text: show their pictures.
_CONTROL_PICTURES = {c: chr(0x2400 + c) for c in range(0x20) if c not in (0x09, 0x0A)}
_CONTROL_PICTURES[0x7F] = "\u2421"


def display_text(token: str) -> str:
    """A token's text as the page shows it (before HTML escaping): control characters become
    their Unicode pictures (U+2400 block), carriage returns included; all else is unchanged."""
    return token.translate(_CONTROL_PICTURES)


class ColourScale:
    """Maps dependency to a shade in [0, 1]: log-scaled between 0 and ``high``.

    shade(d) = log1p(d / ref) / log1p(high / ref), clipped to [0, 1], with ``high`` the 99th
    percentile of the token dependencies (heavy tails would otherwise wash every other token
    out) and ``ref = high / 100`` (so two decades of dependency span the visible range).
    """

    def __init__(self, values: Sequence[float] | np.ndarray):
        x = np.asarray(values, dtype=np.float64).ravel()
        positive = x[x > 0]
        self.high = float(np.quantile(positive, 0.99)) if positive.size else 1.0
        if self.high <= 0:
            self.high = 1.0
        self.ref = self.high / 100.0

    def shade(self, value: float) -> float:
        if value <= 0:
            return 0.0
        return float(min(1.0, math.log1p(value / self.ref) / math.log1p(self.high / self.ref)))

    def value_at(self, shade: float) -> float:
        """Inverse of :meth:`shade` (for the legend ticks)."""
        return float(self.ref * math.expm1(shade * math.log1p(self.high / self.ref)))

    @staticmethod
    def colour(shade: float) -> str:
        r, g, b = (round(lo + (hi - lo) * shade) for lo, hi in zip(_LOW, _HIGH, strict=True))
        return f"#{r:02x}{g:02x}{b:02x}"


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        return f"{value:.{digits}g}"
    return str(value)


def _pct(value: float | None) -> str:
    if value is None:
        return "–"
    if 0 < value < 0.001:
        return f"{value * 100:.2g}%"  # keep rare events (a token at the clamp) visible
    return f"{value * 100:.1f}%"


def _data_uri_png(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _thumbnail(image: Image.Image) -> tuple[str, int, int]:
    """(PNG data URI, display width, display height): stored at most 160 px on its long side,
    displayed with the long side at 96 CSS px (small images are enlarged, pixelated)."""
    img = image.convert("RGB")
    scale = _THUMBNAIL_SIDE / max(img.size)
    if scale < 1:
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))))
    shown = _THUMBNAIL_SHOWN / max(img.size)
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return (
        _data_uri_png(buffer.getvalue()),
        max(1, round(img.width * shown)),
        max(1, round(img.height * shown)),
    )


def _summary_groups(stats: Mapping[str, Any]) -> list[tuple[str, list[tuple[str, str]]]]:
    """(heading, [(label, value)]) groups of the summary panel."""
    tok = stats.get("token_dependency", {})
    traj = stats.get("trajectory_dependency", {})
    sel = stats.get("selection", {})
    q = tok.get("quantiles", {})
    tokens = [
        (
            "responses / tokens",
            f"{_fmt(stats.get('num_responses'))} / {_fmt(stats.get('num_tokens'))}",
        ),
        ("mean", _fmt(tok.get("mean"))),
        ("median", _fmt(tok.get("median"))),
        ("p90 / p99", f"{_fmt(q.get('p90'))} / {_fmt(q.get('p99'))}"),
        ("max", _fmt(tok.get("max"))),
    ]
    tokens += [
        (f"tokens > {level}", _pct(share)) for level, share in tok.get("share_above", {}).items()
    ]
    if "share_at_clip" in tok:
        tokens.append((f"tokens at the clamp ({tok['clip']:g})", _pct(tok["share_at_clip"])))
    sparsity = [
        (f"dependency held by the {key.replace('_', ' ')}", _pct(share))
        for key, share in tok.get("mass_share_top", {}).items()
    ]
    sparsity += [
        ("Gini coefficient", _fmt(tok.get("gini"))),
        (f"TGF keeps (top {sel.get('ratio', 0.4) * 100:g}%)", _fmt(sel.get("selected_tokens"))),
        (
            "mean dependency kept / dropped",
            f"{_fmt(sel.get('mean_dependency_selected'))} / {_fmt(sel.get('mean_dependency_rejected'))}",
        ),
    ]
    trajectory = [
        ("mean", _fmt(traj.get("mean"))),
        ("std", _fmt(traj.get("std"))),
        ("median", _fmt(traj.get("median"))),
        ("skewness", _fmt(traj.get("skewness"))),
        ("range", f"{_fmt(traj.get('min'))} – {_fmt(traj.get('max'))}"),
    ]
    groups = [
        ("Token dependency", tokens),
        ("Sparsity", sparsity),
        ("Trajectory dependency", trajectory),
    ]
    corr = stats.get("correctness")
    if corr:
        rows = [
            ("accuracy", _pct(corr.get("accuracy"))),
            ("point-biserial r", _fmt(corr.get("point_biserial"))),
            ("Spearman ρ", _fmt(corr.get("spearman"))),
            (
                "mean dep. correct / incorrect",
                f"{_fmt(corr.get('mean_dependency_correct'))} / {_fmt(corr.get('mean_dependency_incorrect'))}",
            ),
        ]
        if corr.get("note"):
            rows.append(("note", corr["note"]))
        groups.append(("Correctness vs trajectory dependency", rows))
    ent = stats.get("entropy")
    if ent:
        groups.append(
            (
                f"Dependency vs entropy (top {ent.get('ratio', 0.4) * 100:g}% each)",
                [
                    ("Jaccard", _fmt(ent.get("jaccard"))),
                    (
                        "overlap / by chance",
                        f"{_pct(ent.get('overlap_fraction'))} / {_pct(ent.get('random_overlap_fraction'))}",
                    ),
                    ("Spearman ρ over tokens", _fmt(ent.get("spearman_tokens"))),
                ],
            )
        )
    return groups


def _legend(scale: ColourScale, ratio: float) -> str:
    stops = ", ".join(f"{scale.colour(s)} {s * 100:.0f}%" for s in np.linspace(0, 1, 11))
    ticks = "".join(f"<span>{_fmt(scale.value_at(s), 2)}</span>" for s in np.linspace(0, 1, 5))
    high = scale.colour(0.9)
    return (
        '<section class="panel"><h2>Legend</h2><div class="legend">'
        f'<div class="scale"><div class="bar" style="background: linear-gradient(90deg, {stops})">'
        f'</div><div class="ticks">{ticks}</div>'
        '<div class="note">token visual dependency (log scale, clipped at the 99th percentile)'
        "</div></div>"
        f'<div><span class="t sel sample" style="background:{high}" >token</span> '
        f"underlined: in the top {ratio * 100:g}% of its response by dependency (kept by TGF)</div>"
        '<div class="note">Hover over a token for its scores.</div>'
        "</div></section>"
    )


def _top_token_table(stats: Mapping[str, Any], limit: int = 15) -> str:
    rows = (stats.get("token_strings") or {}).get("by_mean_dependency") or []
    if not rows:
        return ""
    body = "".join(
        f"<tr><td><code>{html.escape(display_text(r['token']))}</code></td><td>{r['count']}</td>"
        f"<td>{_fmt(r['mean_dependency'])}</td><td>{_pct(r['selected_share'])}</td></tr>"
        for r in rows[:limit]
    )
    return (
        '<section class="panel"><h2>Most visually dependent token strings</h2>'
        '<table class="top"><thead><tr><th>token</th><th>count</th><th>mean dependency</th>'
        f"<th>kept by TGF</th></tr></thead><tbody>{body}</tbody></table></section>"
    )


def _plots(plots: Mapping[str, str | Path] | None) -> str:
    if not plots:
        return ""
    figures = []
    for caption, path in plots.items():
        data = Path(path).read_bytes()
        figures.append(
            f'<figure><img alt="{html.escape(caption)}" src="{_data_uri_png(data)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )
    return f'<section class="panel"><h2>Plots</h2><div class="plots">{"".join(figures)}</div></section>'


def _badge(correct: bool | None) -> str:
    if correct is None:
        return '<span class="badge na">not graded</span>'
    return (
        '<span class="badge ok">✓ correct</span>'
        if correct
        else '<span class="badge bad">✗ incorrect</span>'
    )


def _response(
    record: ResponseRecord,
    selected: list[bool],
    scale: ColourScale,
    ratio: float,
    thumbnails: Sequence[tuple[str, int, int]],
) -> str:
    spans = []
    for t, (text, dep, lp, lq, ent) in enumerate(
        zip(
            record.tokens,
            record.dependency,
            record.logp_real,
            record.logp_perturbed,
            record.entropy,
            strict=True,
        )
    ):
        shade = scale.shade(dep)
        classes = ["t"]
        if selected[t]:
            classes.append("sel")
        if shade > 0.72:
            classes.append("hot")
        if text == "":
            classes.append("empty")
        tip = (
            f"#{t} {text!r}\ndependency {dep:.4g}\nlog p (image) {lp:.4g}\n"
            f"log p (perturbed) {lq:.4g}\nentropy {ent:.4g}"
            + (f"\ntop {ratio * 100:g}% of this response" if selected[t] else "")
        )
        spans.append(
            f'<span class="{" ".join(classes)}" style="background:{scale.colour(shade)}" '
            f'data-dep="{dep:.6g}" title="{html.escape(display_text(tip), quote=True)}">'
            f"{html.escape(display_text(text))}</span>"
        )
    question = html.escape(display_text(record.question))
    images = "".join(
        f'<span class="thumb {name}" role="img" aria-label="image {i}" '
        f'style="width:{w}px;height:{h}px"></span>'
        for i, (name, w, h) in enumerate(thumbnails)
    )
    gallery = f'<div class="images">{images}</div>' if images else ""
    answer = (
        ""
        if record.answer is None
        else f"<span>answer <b>{html.escape(display_text(record.answer))}</b></span>"
    )
    return (
        f'<article class="response" id="response-{record.index}">'
        '<div class="rhead">'
        f'<span class="id">#{record.index}</span>'
        f"<span>row {record.row} · sample {record.sample}</span>"
        f"{_badge(record.correct)}"
        f'<span class="traj">trajectory dependency <b>{record.trajectory_dependency:.4g}</b></span>'
        f"<span>{len(record.token_ids)} tokens · {sum(selected)} kept</span>"
        f"{answer}</div>"
        f'<details class="question"><summary>prompt ({record.num_images} image'
        f"{'' if record.num_images == 1 else 's'})</summary><pre>{question}</pre></details>"
        f'<div class="body">{gallery}'
        f'<div class="tokens">{"".join(spans)}</div></div>'
        "</article>"
    )


def render_html(
    records: Sequence[ResponseRecord],
    stats: Mapping[str, Any],
    *,
    ratio: float = 0.4,
    title: str = "Token perception report",
    settings: Mapping[str, Any] | None = None,
    plots: Mapping[str, str | Path] | None = None,
    images: Sequence[Sequence[Image.Image]] | None = None,
    max_responses: int | None = 200,
    order: str = "index",
) -> str:
    """The report page as one HTML string.

    Args:
        records: scored responses (:func:`vppo.analysis.score_responses`).
        stats: :func:`vppo.analysis.perception_statistics` output (the summary panel).
        ratio: TGF keep ratio for the underlined tokens.
        title: page title.
        settings: run settings shown under the title (model, estimator, perturbation, ...).
        plots: caption -> PNG path, embedded as ``data:`` URIs.
        images: optional PIL images per record (same order), shown as thumbnails.
        max_responses: show at most this many responses (``None``: all).
        order: ``"index"`` (input order), ``"dependency"`` (highest trajectory dependency
            first) or ``"dependency_asc"``.
    """
    if order not in ("index", "dependency", "dependency_asc"):
        raise ValueError(f"order is {order!r}; choose index, dependency or dependency_asc.")
    if images is not None and len(images) != len(records):
        raise ValueError(f"images has {len(images)} entries but there are {len(records)} records.")
    if max_responses is not None and max_responses < 0:
        raise ValueError(f"max_responses must be >= 0, got {max_responses}.")
    scale = ColourScale([d for r in records for d in r.dependency])
    positions = list(range(len(records)))
    if order != "index":
        positions.sort(
            key=lambda i: records[i].trajectory_dependency, reverse=order == "dependency"
        )
    shown = positions if max_responses is None else positions[:max_responses]
    # Each image is embedded once, as a CSS class, however many responses share its prompt.
    thumbs_by_row: dict[int, list[tuple[str, int, int]]] = {}
    image_rules: list[str] = []
    articles = []
    for i in shown:
        record = records[i]
        n = len(record.dependency)
        if n:
            dep = torch.tensor([record.dependency], dtype=torch.float64)
            selected = tgf_mask(dep, torch.ones(1, n, dtype=torch.bool), ratio)[0].tolist()
        else:
            selected = []
        thumbs: list[tuple[str, int, int]] = []
        if images is not None:
            if record.row not in thumbs_by_row:
                entries = []
                for img in images[i]:
                    uri, w, h = _thumbnail(img)
                    name = f"image-{len(image_rules)}"
                    image_rules.append(f".{name} {{ background-image: url({uri}); }}")
                    entries.append((name, w, h))
                thumbs_by_row[record.row] = entries
            thumbs = thumbs_by_row[record.row]
        articles.append(_response(record, selected, scale, ratio, thumbs))
    meta = ""
    if settings:
        meta = " · ".join(
            f"{html.escape(str(k))} <code>{html.escape(str(v))}</code>" for k, v in settings.items()
        )
    summary = "".join(
        f'<div class="group"><h3>{html.escape(heading)}</h3>'
        + "".join(
            f'<div class="stat"><span class="k">{html.escape(k)}</span>'
            f'<span class="v">{html.escape(v)}</span></div>'
            for k, v in rows
        )
        + "</div>"
        for heading, rows in _summary_groups(stats)
    )
    more = ""
    if len(shown) < len(records):
        more = f'<p class="note">Showing {len(shown)} of {len(records)} responses (order: {order}).</p>'
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_CSS}{''.join(image_rules)}</style></head><body>"
        f'<header><h1>{html.escape(title)}</h1><p class="meta">{meta}</p></header>'
        f'<section class="panel"><h2>Summary</h2><div class="grid">{summary}</div></section>'
        f"{_legend(scale, ratio)}{_plots(plots)}{_top_token_table(stats)}"
        f"<main><h2>Responses</h2>{more}{''.join(articles)}</main>"
        "</body></html>\n"
    )


def write_html(
    path: str | Path, records: Sequence[ResponseRecord], stats: Mapping[str, Any], **kwargs: Any
) -> Path:
    """Write :func:`render_html` to ``path`` (UTF-8) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(records, stats, **kwargs), encoding="utf-8")
    return path
