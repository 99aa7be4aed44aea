"""From scored responses to a report folder: statistics JSON, summary text, records, plots, HTML."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from vppo.algorithm import entropy_mask, tgf_mask
from vppo.analysis.html import write_html
from vppo.analysis.plots import (
    plot_dependency_vs_entropy,
    plot_token_dependency_histogram,
    plot_top_tokens,
    plot_trajectory_histogram,
)
from vppo.analysis.scoring import ResponseRecord, records_to_tensors
from vppo.analysis.stats import perception_statistics

__all__ = ["REPORT_FILES", "analyze_records", "format_summary", "load_records", "write_report"]

# key -> file name inside the output folder
REPORT_FILES: dict[str, str] = {
    "statistics": "statistics.json",
    "summary": "summary.txt",
    "records": "records.jsonl",
    "token_histogram": "token_dependency_hist.png",
    "trajectory_histogram": "trajectory_dependency_hist.png",
    "dependency_vs_entropy": "dependency_vs_entropy.png",
    "top_tokens": "top_tokens.png",
    "html": "report.html",
}


def analyze_records(
    records: Sequence[ResponseRecord],
    *,
    ratio: float = 0.4,
    clip: float | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """:func:`perception_statistics` of scored responses (entropy, correctness, token strings).

    Correctness enters only when every record was graded. ``kwargs`` go to
    :func:`perception_statistics` (thresholds, mass_fractions, quantiles, top_tokens, ...).
    """
    if not records:
        raise ValueError("records is empty; there is nothing to analyse.")
    tensors = records_to_tensors(records)
    return perception_statistics(
        tensors["dep"],
        tensors["mask"],
        entropy=tensors["entropy"],
        correct=tensors["correct"],
        tokens=tensors["tokens"],
        ratio=ratio,
        clip=clip,
        **kwargs,
    )


def _num(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def _pct(value: float | None) -> str:
    if value is None:
        return "n/a"
    if 0 < value < 0.001:
        return f"{value * 100:.2g}%"
    return f"{value * 100:.1f}%"


def format_summary(stats: Mapping[str, Any]) -> str:
    """A plain-text summary of :func:`perception_statistics` output, a few lines per section."""
    tok = stats["token_dependency"]
    traj = stats["trajectory_dependency"]
    sel = stats["selection"]
    lines = []
    settings = stats.get("settings")
    if settings:
        lines.append("settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()))
    lines.append(
        f"responses: {stats['num_responses']} ({stats['num_empty_responses']} empty), tokens: "
        f"{stats['num_tokens']} (mean {_num(stats['mean_response_tokens'], 3)} per response)"
    )
    q = tok["quantiles"]
    lines.append(
        "token dependency: mean {} | ".format(_num(tok["mean"]))
        + " ".join(f"{k} {_num(v)}" for k, v in q.items())
        + f" | max {_num(tok['max'])}"
    )
    above = ", ".join(f"> {k}: {_pct(v)}" for k, v in tok["share_above"].items())
    lines.append(f"  share of tokens {above}")
    if "share_at_clip" in tok:
        lines.append(f"  at the clamp (≥ {tok['clip']:g}): {_pct(tok['share_at_clip'])}")
    mass = ", ".join(f"{k.replace('_', ' ')}: {_pct(v)}" for k, v in tok["mass_share_top"].items())
    per = ", ".join(f"{_pct(v)}" for v in tok["mass_share_top_per_response"].values())
    lines.append(
        f"  share of total dependency held by the {mass} (per response: {per}); "
        f"Gini {_num(tok['gini'], 3)}"
    )
    lines.append(
        f"trajectory dependency: mean {_num(traj['mean'])}, std {_num(traj['std'])}, "
        f"median {_num(traj['median'])}, skewness {_num(traj['skewness'], 3)}, "
        f"range [{_num(traj['min'])}, {_num(traj['max'])}]"
    )
    lines.append(
        f"TGF top {sel['ratio'] * 100:g}%: {sel['selected_tokens']} tokens kept, mean dependency "
        f"{_num(sel['mean_dependency_selected'])} vs {_num(sel['mean_dependency_rejected'])} "
        f"rejected; they hold {_pct(sel['dependency_share_selected'])} of the dependency"
    )
    corr = stats.get("correctness")
    if corr:
        line = (
            f"correctness: accuracy {_pct(corr['accuracy'])}, point-biserial r "
            f"{_num(corr['point_biserial'], 3)}"
        )
        if corr.get("point_biserial_ci95"):
            lo, hi = corr["point_biserial_ci95"]
            line += f" (95% CI {lo:.3f}..{hi:.3f})"
        line += f", Spearman {_num(corr['spearman'], 3)}"
        if corr.get("note"):
            line += f" [{corr['note']}]"
        lines.append(line)
    ent = stats.get("entropy")
    if ent:
        lines.append(
            f"dependency vs entropy (top {ent['ratio'] * 100:g}% each): Jaccard {_num(ent['jaccard'], 3)}, "
            f"overlap {_pct(ent['overlap_fraction'])} (random: {_pct(ent['random_overlap_fraction'])}), "
            f"token Spearman {_num(ent['spearman_tokens'], 3)}"
        )
    strings = (stats.get("token_strings") or {}).get("by_mean_dependency") or []
    if strings:
        top = ", ".join(
            f"{r['token']!r} ({_num(r['mean_dependency'], 3)}, n={r['count']})"
            for r in strings[:10]
        )
        lines.append(f"most dependent token strings: {top}")
    return "\n".join(lines)


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, torch.Tensor):
        return value.tolist()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def _finite_json(value: Any) -> Any:
    """NaN/inf become null so the file is strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_json(v) for v in value]
    return value


def load_records(path: str | Path) -> list[ResponseRecord]:
    """Read a ``records.jsonl`` written by :func:`write_report`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"records file not found: {path}.")
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(ResponseRecord.from_dict(json.loads(line)))
        except (json.JSONDecodeError, TypeError, ValueError) as err:
            raise ValueError(f"line {number} of {path} is not a valid record ({err}).") from err
    return records


def write_report(
    records: Sequence[ResponseRecord],
    stats: Mapping[str, Any],
    output_dir: str | Path,
    *,
    images: Sequence[Sequence[Image.Image]] | None = None,
    html_max_responses: int | None = 200,
    html_order: str = "index",
    title: str = "Token perception report",
) -> dict[str, Path]:
    """Write every report file into ``output_dir`` and return key -> path (see REPORT_FILES).

    The TGF ratio and the clamp come from ``stats`` (``selection.ratio``,
    ``token_dependency.clip``); ``stats["settings"]``, when present, heads the HTML page.
    ``images`` (PIL images per record) adds thumbnails to the page.
    """
    if not records:
        raise ValueError("records is empty; there is nothing to report.")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {key: out / name for key, name in REPORT_FILES.items()}
    ratio = float(stats["selection"]["ratio"])
    clip = stats["token_dependency"].get("clip")
    settings = dict(stats.get("settings") or {})
    estimator = str(settings.get("estimator", "k3"))

    paths["statistics"].write_text(
        json.dumps(_finite_json(dict(stats)), indent=2, ensure_ascii=False, default=_json_default)
        + "\n",
        encoding="utf-8",
    )
    paths["summary"].write_text(format_summary(stats) + "\n", encoding="utf-8")
    with paths["records"].open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(_finite_json(record.to_dict()), ensure_ascii=False) + "\n")

    tensors = records_to_tensors(records)
    mask = tensors["mask"]
    dep, entropy = tensors["dep"], tensors["entropy"]
    plot_token_dependency_histogram(
        dep[mask].numpy(), paths["token_histogram"], clip=clip, estimator=estimator
    )
    nonempty = mask.any(-1)
    traj = (dep.sum(-1) / mask.sum(-1).clamp(min=1))[nonempty].numpy()
    correct = tensors["correct"]
    plot_trajectory_histogram(
        traj,
        paths["trajectory_histogram"],
        correct=None if correct is None else correct[nonempty].numpy(),
    )
    plot_dependency_vs_entropy(
        dep[mask].numpy(),
        entropy[mask].numpy(),
        tgf_mask(dep, mask, ratio)[mask].numpy(),
        entropy_mask(entropy, mask, ratio)[mask].numpy(),
        paths["dependency_vs_entropy"],
        ratio=ratio,
        jaccard=(stats.get("entropy") or {}).get("jaccard"),
    )
    plot_top_tokens(
        (stats.get("token_strings") or {}).get("by_mean_dependency") or [], paths["top_tokens"]
    )
    plots = {
        "Token dependency (log count)": paths["token_histogram"],
        "Trajectory dependency": paths["trajectory_histogram"],
        "Dependency vs entropy": paths["dependency_vs_entropy"],
        "Most dependent token strings": paths["top_tokens"],
    }
    write_html(
        paths["html"],
        records,
        stats,
        ratio=ratio,
        title=title,
        settings=settings,
        plots=plots,
        images=images,
        max_responses=html_max_responses,
        order=html_order,
    )
    return paths
