"""Two processes on CPU (gloo) through `accelerate launch`: TAS statistics gathered across ranks and
dynamic-sampling rounds agreed between ranks (a rank that stops early would hang the other)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

REWARD = '''
import random

def half_uniform(completions, answer, **kwargs):
    """Groups whose answer is even get all-1 rewards (dropped by dynamic sampling); others are random."""
    return [1.0 if int(a) % 2 == 0 else float(random.random() < 0.5) for a in answer]
'''


def test_two_process_training_with_dynamic_sampling(tmp_path, subprocess_env, free_port):
    reward = tmp_path / "reward.py"
    reward.write_text(REWARD)
    rows = [
        {"images": ["img.png"], "problem": f"<image>What is {i}?", "answer": str(i)}
        for i in range(16)
    ]
    from PIL import Image

    Image.new("RGB", (56, 56), (10, 200, 30)).save(tmp_path / "img.png")
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    out = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--cpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        "vppo.cli",
        "train",
        "--config",
        "tiny_vppo",
        "--dataset_name",
        str(tmp_path / "train.jsonl"),
        "--reward_funcs",
        f"{reward}:half_uniform",
        "--dynamic_sampling_reward",
        "half_uniform",
        "--dynamic_sampling_max_rounds",
        "3",
        "--max_steps",
        "2",
        "--max_completion_length",
        "8",
        "--per_device_train_batch_size",
        "4",
        "--num_generations",
        "4",
        "--min_pixels",
        "3136",
        "--max_pixels",
        "3136",
        "--output_dir",
        str(out),
        "--save_steps",
        "2",
    ]
    command[command.index("--num_machines") : command.index("--num_machines")] = [
        "--main_process_port",
        str(free_port),
    ]
    env = subprocess_env()
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    state = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())
    logs = [entry for entry in state["log_history"] if "vppo/kept_token_frac" in entry]
    assert len(logs) == 2
    for log in logs:
        assert log["vppo/tas_scale_mean"] == pytest.approx(1.0, abs=1e-5)
        assert log["vppo/dynamic_sampling/dropped_frac"] > 0
        assert log["vppo/dynamic_sampling/extra_rounds"] >= 1
