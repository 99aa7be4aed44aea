"""`vppo compare`: bootstrap intervals, paired differences, the tables, the curve plot, the
fingerprint, resumable tiny runs, parallel runs and the reasoning task."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from vppo.toy import compare as compare_module
from vppo.toy.compare import (
    COMPARE_DEFAULTS,
    aggregate,
    bootstrap_ci,
    build_parser,
    format_table,
    main,
    mean_std,
    paired_differences,
    plot_curves,
    run_comparison,
    run_fingerprint,
    settings_from_args,
)
from vppo.toy.compare import cli as compare_cli
from vppo.toy.compare import runner as compare_runner

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _run(method: str, seed: int, after: float, rewards: list[float]) -> dict:
    return {
        "method": method,
        "seed": seed,
        "after": after,
        "seconds": {"train": 60.0},
        "curve": [{"step": float(i + 1), "reward": r} for i, r in enumerate(rewards)],
    }


def test_mean_std_is_the_sample_standard_deviation():
    assert mean_std([2.0]) == (2.0, 0.0)
    mean, sd = mean_std([1.0, 2.0, 3.0, 6.0])
    assert mean == 3.0 and sd == pytest.approx((14 / 3) ** 0.5)
    with pytest.raises(ValueError):
        mean_std([])


def test_bootstrap_ci_hand_computed_cases():
    # One value, or equal values: every resample has the same mean.
    assert bootstrap_ci([57.5]) == (57.5, 57.5)
    assert bootstrap_ci([54.58984375] * 5) == (54.58984375, 54.58984375)
    # Two values 0 and 1: resample means are 0, 0.5, 1 with probability 1/4, 1/2, 1/4, so the
    # 2.5% and 97.5% quantiles are the extremes.
    assert bootstrap_ci([0.0, 1.0]) == (0.0, 1.0)
    with pytest.raises(ValueError):
        bootstrap_ci([])
    with pytest.raises(ValueError):
        bootstrap_ci([1.0], level=1.0)


def test_bootstrap_ci_contains_the_mean_is_deterministic_and_narrows_with_n():
    import numpy as np

    rng = np.random.default_rng(7)
    values = list(rng.normal(57.0, 2.0, size=64))
    widths = {}
    for n in (4, 16, 64):
        part = values[:n]
        low, high = bootstrap_ci(part)
        assert low < sum(part) / n < high
        assert bootstrap_ci(part) == (low, high)  # fixed generator seed
        widths[n] = high - low
    assert widths[64] < widths[16] < widths[4]
    # about 2 * 1.96 * sd / sqrt(n) for many values
    assert widths[64] == pytest.approx(2 * 1.96 * np.std(values, ddof=1) / 8, rel=0.15)
    assert bootstrap_ci(values[:16], seed=1) != bootstrap_ci(values[:16])


def test_paired_differences_use_common_seeds_and_the_right_sign():
    summary = {
        "dapo": {"seeds": [0, 1, 2, 3], "scores": [50.0, 52.0, 54.0, 56.0]},
        "vppo": {"seeds": [3, 1, 0, 7], "scores": [57.0, 51.0, 53.0, 99.0]},
        "grpo": {"seeds": [5], "scores": [10.0]},
    }
    paired = paired_differences(summary)
    assert set(paired) == {"vppo"}  # no baseline row, no row without a common seed
    vppo = paired["vppo"]
    assert vppo["seeds"] == [3, 1, 0] and vppo["differences"] == [1.0, -1.0, 3.0]
    assert vppo["n"] == 3 and vppo["wins"] == 2 and vppo["ties"] == 0 and vppo["mean"] == 1.0
    assert vppo["ci"][0] <= 1.0 <= vppo["ci"][1]
    assert vppo["ci"] == list(bootstrap_ci([1.0, -1.0, 3.0]))
    assert paired_differences(summary, baseline="grpo") == {}  # no common seed with grpo
    tied = paired_differences(
        {
            "dapo": {"seeds": [0, 1], "scores": [50.0, 50.0]},
            "vppo": {"seeds": [0, 1], "scores": [50.0, 49.0]},
        }
    )
    assert tied["vppo"]["wins"] == 0 and tied["vppo"]["ties"] == 1 and tied["vppo"]["mean"] == -0.5
    assert "| 0/2 (1 tied) |" in format_table(
        {
            m: {**row, "ci": [0, 0], "sd": 0.0, "mean": 50.0, "minutes": 1.0}
            for m, row in {
                "dapo": {"seeds": [0, 1], "scores": [50.0, 50.0]},
                "vppo": {"seeds": [0, 1], "scores": [50.0, 49.0]},
            }.items()
        },
        before=None,
        k=8,
        steps=4,
        eval_size=128,
    )
    assert paired_differences({"vppo": summary["vppo"]}) == {}


def test_aggregate_and_table():
    results = {
        "dapo": [
            _run("dapo", 0, 50.0, [0.4, 0.5, 0.6, 0.8]),
            _run("dapo", 1, 54.0, [0.4, 0.4, 0.6, 0.6]),
        ],
        "vppo": [_run("vppo", 0, 60.0, [0.5, 0.6, 0.7, 0.9])],
    }
    summary = aggregate(results)
    assert summary["dapo"]["mean"] == 52.0 and summary["dapo"]["sd"] == pytest.approx(8**0.5)
    assert summary["dapo"]["scores"] == [50.0, 54.0] and summary["dapo"]["seeds"] == [0, 1]
    assert summary["dapo"]["ci"] == [50.0, 54.0] and summary["vppo"]["ci"] == [60.0, 60.0]
    # Final-quarter reward: the last step of 4 for each run.
    assert summary["dapo"]["final_reward_mean"] == pytest.approx(0.7)
    assert summary["vppo"]["sd"] == 0.0 and summary["vppo"]["minutes"] == 1.0
    table = format_table(summary, before=45.0, k=8, steps=4, eval_size=128)
    lines = table.splitlines()
    assert lines[0] == (
        "| Method | n | Test avg@8 (%) mean [95% CI] | "
        "Δ vs DAPO, paired [95% CI] | Wins vs DAPO | sd | Δ vs start | Train reward, last 25% of steps | "
        "Minutes / run |"
    )
    assert lines[2] == "| Warm start (no RL) | – | 45.0 | – | – | – | – | – | – |"
    dapo_row = (
        "| DAPO | 2 | 52.0 [50.0, 54.0] | (baseline) | – | 2.8 | +7.0 | 0.700 ± 0.141 | 1.0 |"
    )
    assert dapo_row in table
    assert "| VPPO | 1 | 60.0 [60.0, 60.0] | +10.0 [+10.0, +10.0] | 1/1 | 0.0 | +15.0 |" in table
    # per-seed table: a column per seed, the differences to DAPO below the scores
    assert "| Test avg@8 (%) per seed | 0 | 1 |" in table
    assert "| DAPO | 50.0 | 54.0 |" in table and "| VPPO | 60.0 | – |" in table
    assert "| VPPO − DAPO | +10.0 | – |" in table

    assert "fewer than 8 seeds" in table
    without = format_table({"vppo": summary["vppo"]}, before=None, k=8, steps=4, eval_size=128)
    assert "Δ vs DAPO" not in without.splitlines()[0]
    assert "DAPO is not among the methods" in without


def test_plot_curves_writes_a_png(tmp_path):
    results = {
        "grpo": [_run("grpo", s, 40.0, [0.1 * s, 0.2, 0.3]) for s in range(3)],
        "vppo": [_run("vppo", 0, 40.0, [0.3, 0.4, 0.5])],
    }
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
    # the command's defaults are those settings
    assert settings_from_args(build_parser().parse_args([])) == COMPARE_DEFAULTS
    assert settings_from_args(build_parser().parse_args(["--task", "shapes"])) == COMPARE_DEFAULTS


def test_the_task_sets_the_response_length():
    from vppo.data.synthetic import TASK_FAMILIES
    from vppo.toy.demo import TASK_MAX_COMPLETION_LENGTH

    assert set(TASK_MAX_COMPLETION_LENGTH) == set(TASK_FAMILIES)
    parse = build_parser().parse_args
    reasoning = settings_from_args(parse(["--task", "reasoning"]))
    assert reasoning == replace(COMPARE_DEFAULTS, task="reasoning", max_completion_length=96)
    assert (
        settings_from_args(
            parse(["--task", "reasoning", "--max-completion-length", "64"])
        ).max_completion_length
        == 64
    )
    assert settings_from_args(parse(["--quick"])).max_completion_length == 48
    with pytest.raises(SystemExit):
        parse(["--task", "poetry"])
    with pytest.raises(SystemExit):
        parse(["--jobs", "0"])
    with pytest.raises(ValueError, match="task"):
        replace(COMPARE_DEFAULTS, task="poetry")


def test_bad_methods_and_seeds_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="methods"):
        run_comparison(["vppo", "ppo"], [0], COMPARE_DEFAULTS, tmp_path)
    with pytest.raises(ValueError, match="seeds"):
        run_comparison(["vppo"], [0, 0], COMPARE_DEFAULTS, tmp_path)


@pytest.mark.slow
def test_tiny_comparison_writes_table_and_plot_and_resumes(tmp_path, monkeypatch):
    settings = compare_module._QUICK
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

    monkeypatch.setattr(compare_runner, "train_rl", no_training)
    second = run_comparison(
        ["dapo", "vppo"], [0], settings, out, progress=False, out=lambda _: None
    )
    assert second["summary"] == first["summary"] and second["before"] == first["before"]


def _run_file(folder, method, seed):
    run = json.loads((folder / "runs" / method / f"seed{seed}.json").read_text())
    run.pop("seconds")
    return run


@pytest.mark.slow
def test_parallel_runs_equal_the_sequential_ones(tmp_path):
    import torch

    settings = compare_module._QUICK
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the workers' setting below: same kernels, same numbers
    try:
        kwargs = {"progress": False, "out": lambda _: None}
        one = run_comparison(["dapo", "vppo"], [0, 1], settings, tmp_path / "one", jobs=1, **kwargs)
        two = run_comparison(
            ["dapo", "vppo"], [0, 1], settings, tmp_path / "two", jobs=2, threads=1, **kwargs
        )
    finally:
        torch.set_num_threads(threads)
    for method in ("dapo", "vppo"):
        for seed in (0, 1):
            assert _run_file(tmp_path / "two", method, seed) == _run_file(
                tmp_path / "one", method, seed
            )
    assert two["before"] == one["before"] and two["paired"] == one["paired"]
    for method in ("dapo", "vppo"):  # all but the timings
        assert {**two["summary"][method], "minutes": 0} == {**one["summary"][method], "minutes": 0}
    assert not (tmp_path / "two" / "trainer_tmp").exists()


@pytest.mark.slow
def test_quick_reasoning_comparison_from_the_command_line(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(compare_cli, "quiet_library_noise", lambda: None)  # keeps test logging
    threads = torch.get_num_threads()
    try:
        assert (
            main(
                [
                    "--quick",
                    "--task",
                    "reasoning",
                    "--methods",
                    "dapo,vppo",
                    "--seeds",
                    "0",
                    "--output-dir",
                    str(tmp_path),
                    "--threads",
                    "1",
                    "--no-progress",
                ]
            )
            == 0
        )
    finally:
        torch.set_num_threads(threads)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["settings"]["task"] == "reasoning"
    assert summary["settings"]["max_completion_length"] == 96
    assert summary["fingerprint"] != run_fingerprint(compare_module._QUICK, "shipped")
    assert set(summary["summary"]) == {"dapo", "vppo"}
    assert set(summary["paired"]["differences"]) == {"vppo"}
    run = json.loads((tmp_path / "runs" / "vppo" / "seed0.json").read_text())
    assert run["settings"]["task"] == "reasoning" and 0.0 <= run["after"] <= 100.0
    assert "| VPPO |" in (tmp_path / "comparison.md").read_text()


def test_device_reaches_the_trainer_and_the_fingerprint(tmp_path):
    """`--device cuda` makes GPU runs (use_cpu off) under their own fingerprint; a bad device is
    one line naming the field."""
    from vppo.toy.compare import build_parser, run_fingerprint, settings_from_args
    from vppo.toy.demo import rl_config

    cpu = settings_from_args(build_parser().parse_args([]))
    gpu = settings_from_args(build_parser().parse_args(["--device", "cuda"]))
    assert rl_config("vppo", cpu, tmp_path).use_cpu is True
    assert rl_config("vppo", gpu, tmp_path).use_cpu is False
    assert run_fingerprint(cpu, "shipped") == "456479f196a5"
    assert run_fingerprint(gpu, "shipped") != run_fingerprint(cpu, "shipped")
    with pytest.raises(ValueError, match="DemoSettings.device"):
        replace(cpu, device="cuda:1")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--device", "gpu"])
