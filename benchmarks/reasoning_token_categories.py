"""Which tokens of the reasoning family depend on the picture: a table from `vppo analyze` records.

Each response token is put in one category by its word and its sentence in the reference layout
(look. read. aside. plan. arithmetic. check: ... conclusion.</think> \\boxed{}), sentences split at
".". The free-phrasing words come from `vppo.data.synthetic`'s free-sentence slots. TGF keeps each
response's top 40% by dependency.

    vppo analyze --model src/vppo/assets/warmstart_reasoning --dataset data/reasoning --split test \\
        --samples 128 --responses-per-prompt 2 --max-new-tokens 96 --output-dir analysis_results/reasoning
    .venv/bin/python benchmarks/reasoning_token_categories.py analysis_results/reasoning/records.jsonl

Prints the concentration of dependency (share of tokens holding 50/80/90/95% of it), trajectory
quantiles, and a markdown table per category: share of tokens, mean/median dependency, mean
entropy, share of all dependency, share kept by TGF.
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np

from vppo.data import synthetic as syn

CATEGORIES = (
    "grounded: count / digit read",
    "grounded: shape/shapes/other",
    "colour (copied from question)",
    "arithmetic: operands (copied)",
    "arithmetic: result",
    "answer restated",
    "answer in \\boxed{}",
    "free phrasing: choice",
    "fixed text, punctuation, rest",
    "format (</think>, \\boxed, EOS)",
)
READ, ARITHMETIC = 1, 4  # sentence indices in the reference layout
_AMBIGUOUS = {"I", "the", "it", "is", "two"}  # also fixed words, or the second word of an option


def free_words() -> set[str]:
    """First words of the options of every free slot with more than one option."""
    words = {verb.split()[1] for verb in syn._READ_VERBS}
    for slots in syn._REASONING_SLOTS:
        for options in slots:
            if len(options) > 1:
                words |= {option.split()[0].strip(".:,") for option in options}
    return words - _AMBIGUOUS


def categorise(tokens: list[str], free: set[str]) -> list[str]:
    out, sentence, after_think, after_is = [], 0, False, False
    for token in tokens:
        word = token.strip()
        after_think = after_think or token == "</think>"
        if after_think:
            category = CATEGORIES[6] if word.isdigit() else CATEGORIES[9]
        elif word.isdigit():
            if sentence == READ:
                category = CATEGORIES[0]
            elif sentence == ARITHMETIC:
                category = CATEGORIES[4] if after_is else CATEGORIES[3]
            else:
                category = CATEGORIES[5]
        elif sentence == READ and word in syn.PALETTE:
            category = CATEGORIES[2]
        elif sentence == READ and word in ("shape", "shapes", "other"):
            category = CATEGORIES[1]
        elif word in free:
            category = CATEGORIES[7]
        else:
            category = CATEGORIES[8]
        out.append(category)
        after_is = after_is or (sentence == ARITHMETIC and word == "is")
        if word == ".":
            sentence, after_is = sentence + 1, False
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("records", help="records.jsonl written by vppo analyze")
    parser.add_argument("--ratio", type=float, default=0.4, help="TGF keep ratio (default 0.4)")
    args = parser.parse_args()
    with open(args.records, encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle if line.strip()]
    free = free_words()

    pooled = np.sort(np.concatenate([r["dependency"] for r in records]))[::-1]
    cumulative = np.cumsum(pooled) / pooled.sum()
    for mass in (0.5, 0.8, 0.9, 0.95):
        share = (np.searchsorted(cumulative, mass) + 1) / len(pooled)
        print(f"{mass:.0%} of the dependency is held by the top {share:.2%} of tokens")
    trajectory = np.array([np.mean(r["dependency"]) for r in records])
    quantiles = np.quantile(trajectory, [0.1, 0.25, 0.5, 0.75, 0.9])
    print("trajectory dependency p10 p25 p50 p75 p90:", " ".join(f"{q:.4g}" for q in quantiles))

    rows: dict[str, list[tuple[float, float, bool]]] = {c: [] for c in CATEGORIES}
    for record in records:
        dep = np.asarray(record["dependency"], dtype=float)
        entropy = np.asarray(record["entropy"], dtype=float)
        kept = np.zeros(len(dep), dtype=bool)
        kept[np.argsort(-dep, kind="stable")[: max(1, math.ceil(args.ratio * len(dep)))]] = True
        for i, category in enumerate(categorise(record["tokens"], free)):
            rows[category].append((dep[i], entropy[i], kept[i]))
    total = pooled.sum()
    print(
        "| tokens | share of tokens | mean dependency | median dependency | mean entropy (nats) "
        f"| share of all dependency | kept by TGF top {args.ratio:.0%} |"
    )
    print("|---|---|---|---|---|---|---|")
    for category, values in rows.items():
        if not values:
            continue
        a = np.array(values, dtype=float)
        print(
            f"| {category} | {len(a) / len(pooled):.1%} | {a[:, 0].mean():.3g} "
            f"| {np.median(a[:, 0]):.2g} | {a[:, 1].mean():.2f} | {a[:, 0].sum() / total:.1%} "
            f"| {a[:, 2].mean():.0%} |"
        )


if __name__ == "__main__":
    main()
