"""`vppo compare`: aggregation, the markdown table, the curve plot, a resumable tiny run."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from vppo import compare as compare_module
from vppo.compare import (
    COMPARE_DEFAULTS,
    aggregate,
    format_table,
    mean_std,
    plot_curves,
    run_comparison,
    run_fingerprint,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _run(method: str, seed: int, after: float, rewards: list[float]) -> dict:
    return {"method": method, "seed": seed, "after": after, "seconds": {"train": 60.0},
            "curve": [{"step": float(i + 1), "reward": r} for i, r in enumerate(rewards)]}


def test_mean_std_is_the_sample_standard_deviation():
    assert mean_std([2.0]) == (2.0, 0.0)
    mean, sd = mean_std([1.0, 2.0, 3.0, 6.0])
    assert mean == 3.0 and sd == pytest.approx((14 / 3) ** 0.5)
    with pytest.raises(ValueError):
        mean_std([])


def test_aggregate_and_table():
    results = {
        "dapo": [_run("dapo", 0, 50.0, [0.4, 0.5, 0.6, 0.8]), _run("dapo", 1, 54.0, [0.4, 0.4, 0.6, 0.6])],
        "vppo": [_run("vppo", 0, 60.0, [0.5, 0.6, 0.7, 0.9])],
    }
    summary = aggregate(results)
    assert summary["dapo"]["mean"] == 52.0 and summary["dapo"]["sd"] == pytest.approx(8**0.5)
    assert summary["dapo"]["scores"] == [50.0, 54.0] and summary["dapo"]["seeds"] == [0, 1]
    # Final-quarter reward: the last step of 4 for each run.
    assert summary["dapo"]["final_reward_mean"] == pytest.approx(0.7)
    assert summary["vppo"]["sd"] == 0.0 and summary["vppo"]["minutes"] == 1.0
    table = format_table(summary, before=45.0, k=8, steps=4, eval_size=128)
    lines = table.splitlines()
    assert lines[0].startswith("| Method | Test avg@8")
    assert lines[2] == "| Warm start (no RL) | 45.0 | – | – | – | – |"
    assert "| DAPO | 52.0 ± 2.8 | +7.0 | 50.0, 54.0 |" in table
    assert "| VPPO | 60.0 ± 0.0 | +15.0 | 60.0 |" in table


def test_plot_curves_writes_a_png(tmp_path):
    results = {"grpo": [_run("grpo", s, 40.0, [0.1 * s, 0.2, 0.3]) for s in range(3)],
               "vppo": [_run("vppo", 0, 40.0, [0.3, 0.4, 0.5])]}
    path = plot_curves(results, tmp_path / "img" / "curves.png", window=2)
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 5000
    with pytest.raises(ValueError, match="no run"):
        plot_curves({"vppo": [{"curve": []}]}, tmp_path / "empty.png")


def test_fingerprint_ignores_the_seed_only():
    a = run_fingerprint(COMPARE_DEFAULTS, "shipped")
    assert a == run_fingerprint(replace(COMPARE_DEFAULTS, seed=3), "shipped")
    assert a != run_fingerprint(replace(COMPARE_DEFAULTS, steps=3), "shipped")
    assert a != run_fingerprint(COMPARE_DEFAULTS, "other")


def test_fingerprint_of_the_stored_shapes_runs_is_unchanged():
    # The finished 40-step runs of docs/comparison.md carry this value; adding DemoSettings.task
    # (default "shapes") must not retrain them.
    assert run_fingerprint(COMPARE_DEFAULTS, "shipped") == "456479f196a5"
    assert run_fingerprint(replace(COMPARE_DEFAULTS, task="shapes"), "shipped") == "456479f196a5"
    assert run_fingerprint(replace(COMPARE_DEFAULTS, task="reasoning"), "shipped") != "456479f196a5"


def test_bad_methods_and_seeds_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="methods"):
        run_comparison(["vppo", "ppo"], [0], COMPARE_DEFAULTS, tmp_path)
    with pytest.raises(ValueError, match="seeds"):
        run_comparison(["vppo"], [0, 0], COMPARE_DEFAULTS, tmp_path)


@pytest.mark.slow
def test_tiny_comparison_writes_table_and_plot_and_resumes(tmp_path, monkeypatch):
    settings = replace(COMPARE_DEFAULTS, steps=1, prompts_per_step=2, num_generations=4,
                       train_size=16, eval_size=4, eval_k=1)
    out = tmp_path / "cmp"
    first = run_comparison(["dapo", "vppo"], [0], settings, out, progress=False, out=lambda _: None)
    table = first["table_path"].read_text()
    assert "| DAPO |" in table and "| VPPO |" in table and "| Warm start (no RL) |" in table
    assert first["plot_path"].read_bytes().startswith(PNG_SIGNATURE)
    for method in ("dapo", "vppo"):
        run = json.loads((out / "runs" / method / "seed0.json").read_text())
        assert run["method"] == method and run["steps"] == 1 and len(run["curve"]) == 1
        assert 0.0 <= run["after"] <= 100.0
    vppo_curve = json.loads((out / "runs" / "vppo" / "seed0.json").read_text())["curve"][0]
    dapo_curve = json.loads((out / "runs" / "dapo" / "seed0.json").read_text())["curve"][0]
    assert "vppo/dependency_mean" in vppo_curve and "vppo/dependency_mean" not in dapo_curve

    # A rerun with the same settings trains nothing and reports the same numbers.
    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(compare_module, "train_rl", no_training)
    second = run_comparison(["dapo", "vppo"], [0], settings, out, progress=False, out=lambda _: None)
    assert second["summary"] == first["summary"] and second["before"] == first["before"]
