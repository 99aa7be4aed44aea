"""Long runs lose nothing (one process): resume with dynamic sampling on equals the uninterrupted
run; SIGTERM saves and says how to continue; incomplete, cut and out-of-space saves never block
`--resume_from_checkpoint last`; one run per folder; a resumed run says what changed.

The two-process (FSDP2, ZeRO-3) resume equality is in tests/trainer/test_trainer_sharded.py.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import signal

import pytest
import torch
from safetensors.torch import load_file
from test_trainer_cli import _image_rows

from vppo.cli import main as vppo_main
from vppo.trainer.cli import LOCK_FILE
from vppo.trainer.resume import TRAINER_STATE_FILE

pytestmark = pytest.mark.slow

# tiny_vppo (a tiny random Qwen2.5-VL: every reward 0, so dynamic sampling drops every group and
# refills from the second sampler each step), saving every step.
TINY = [
    "--config",
    "tiny_vppo",
    "--max_completion_length",
    "8",
    "--per_device_train_batch_size",
    "4",
    "--num_generations",
    "2",
    "--min_pixels",
    "3136",
    "--max_pixels",
    "3136",
    "--save_steps",
    "1",
]


def _history(run):
    log = json.loads((run / "trainer_state.json").read_text())["log_history"]
    return [
        {
            k: v
            for k, v in entry.items()
            if "time" not in k and "per_second" not in k and k != "train_runtime"
        }
        for entry in log
    ]


def _weights_equal(a, b):
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_resume_with_dynamic_sampling_equals_the_uninterrupted_run(tmp_path, interrupt_training):
    data = _image_rows(tmp_path, ["RGB"] * 8)
    common = [
        "train",
        *TINY,
        "--dataset_name",
        str(data),
        "--max_steps",
        "4",
        "--dynamic_sampling",
        "true",
        "--dynamic_sampling_max_rounds",
        "2",
    ]
    assert vppo_main([*common, "--output_dir", str(tmp_path / "a")]) == 0
    state = json.loads((tmp_path / "a" / "checkpoint-2" / TRAINER_STATE_FILE).read_text())
    assert state["refill_draws"] > 0  # the refill stream is part-way through an epoch at step 2
    interrupt_training(2)
    assert vppo_main([*common, "--output_dir", str(tmp_path / "b")]) == 130
    interrupt_training(None)
    assert (
        vppo_main(
            [*common, "--output_dir", str(tmp_path / "b"), "--resume_from_checkpoint", "last"]
        )
        == 0
    )
    history = _history(tmp_path / "a" / "checkpoint-4")
    assert history == _history(tmp_path / "b" / "checkpoint-4")
    assert [e["step"] for e in history if "loss" in e] == [1, 2, 3, 4]
    assert all(e["vppo/dynamic_sampling/extra_rounds"] > 0 for e in history if "loss" in e)
    assert _weights_equal(tmp_path / "a", tmp_path / "b")
    # the optimizer state too
    opt_a = torch.load(tmp_path / "a" / "checkpoint-4" / "optimizer.pt", weights_only=True)
    opt_b = torch.load(tmp_path / "b" / "checkpoint-4" / "optimizer.pt", weights_only=True)
    for key, value in opt_a["state"].items():
        assert all(
            torch.equal(value[k], opt_b["state"][key][k])
            for k in value
            if torch.is_tensor(value[k])
        )


def test_sigterm_saves_a_checkpoint_and_says_how_to_continue(tmp_path, capsys):
    data = _image_rows(tmp_path, ["RGB"] * 8)
    reward = tmp_path / "reward.py"
    # the scheduler's pre-emption, sent while the third rollout is scored
    reward.write_text(
        "import os, signal\ncalls = []\n"
        "def pre_empted(completions, **kwargs):\n"
        "    calls.append(1)\n"
        "    if len(calls) == 3:\n"
        "        os.kill(os.getpid(), signal.SIGTERM)\n"
        "    return [0.0] * len(completions)\n"
    )
    run = tmp_path / "run"
    common = [
        "train",
        *TINY,
        "--dataset_name",
        str(data),
        "--max_steps",
        "6",
        "--save_steps",
        "100",
        "--dynamic_sampling",
        "false",
        "--reward_funcs",
        f"{reward}:pre_empted",
        "--output_dir",
        str(run),
    ]
    handler = signal.getsignal(signal.SIGTERM)
    assert vppo_main(common) == 143
    assert signal.getsignal(signal.SIGTERM) is handler  # restored
    err = capsys.readouterr().err
    assert (
        f"vppo train: stopped by SIGTERM at step 3; saved: {run / 'checkpoint-3'}; continue with the "
        "same command --resume_from_checkpoint last." in err
    )
    assert (run / "checkpoint-3" / TRAINER_STATE_FILE).is_file() and not (
        run / "model.safetensors"
    ).exists()
    assert not (run / LOCK_FILE).exists()
    reward.write_text(
        "def pre_empted(completions, **kwargs):\n    return [0.0] * len(completions)\n"
    )
    assert vppo_main([*common, "--resume_from_checkpoint", "last"]) == 0
    assert json.loads((run / "checkpoint-6" / "trainer_state.json").read_text())["global_step"] == 6


def test_last_skips_incomplete_and_cut_checkpoints(tmp_path, caplog, capsys):
    data = _image_rows(tmp_path, ["RGB"] * 8)
    run = tmp_path / "run"
    common = [
        "train",
        *TINY,
        "--dataset_name",
        str(data),
        "--dynamic_sampling",
        "false",
        "--output_dir",
        str(run),
    ]
    assert vppo_main([*common, "--max_steps", "3"]) == 0
    # a save killed before it finished (kill -9, power cut): no closing state file
    (run / "checkpoint-3" / TRAINER_STATE_FILE).unlink()
    # a cut weights file
    weights = run / "checkpoint-2" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    # naming the cut checkpoint explicitly is refused in one line
    assert (
        vppo_main(
            [*common, "--max_steps", "4", "--resume_from_checkpoint", str(run / "checkpoint-2")]
        )
        == 2
    )
    assert (
        f"vppo train: resume_from_checkpoint: {weights} is 1,000 bytes" in capsys.readouterr().err
    )
    with caplog.at_level(
        logging.WARNING, logger="vppo.trainer"
    ):  # vppo demo (in-process) quiets it
        assert vppo_main([*common, "--max_steps", "4", "--resume_from_checkpoint", "last"]) == 0
    text = caplog.text
    assert f"Skipping {run / 'checkpoint-3'} is an incomplete checkpoint" in text
    assert (
        f"{weights} is 1,000 bytes, not the" in text
        and f"Resuming from {run / 'checkpoint-1'} instead." in text
    )
    assert json.loads((run / "checkpoint-4" / "trainer_state.json").read_text())["global_step"] == 4


def test_a_full_disk_ends_in_one_sentence_and_keeps_the_last_checkpoint(
    tmp_path, monkeypatch, capsys
):
    data = _image_rows(tmp_path, ["RGB"] * 8)
    run = tmp_path / "run"
    common = [
        "train",
        *TINY,
        "--dataset_name",
        str(data),
        "--dynamic_sampling",
        "false",
        "--output_dir",
        str(run),
        "--max_steps",
        "3",
    ]
    save = torch.save

    def full_disk(obj, f, *args, **kwargs):  # the optimizer of the second checkpoint does not fit
        if "checkpoint-2" in str(f) and "optimizer" in str(f):
            raise OSError(errno.ENOSPC, "No space left on device", str(f))
        return save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk)
    assert vppo_main(common) == 2
    err = capsys.readouterr().err
    (line,) = [line for line in err.splitlines() if line.startswith("vppo train:")]
    assert line.startswith(
        f"vppo train: no space left on the device of {run} while saving checkpoint-2 (about "
    )
    assert "GB needed" in line and "Traceback" not in err
    monkeypatch.setattr(torch, "save", save)
    assert vppo_main([*common, "--resume_from_checkpoint", "last"]) == 0  # from checkpoint-1
    assert json.loads((run / "checkpoint-3" / "trainer_state.json").read_text())["global_step"] == 3


def test_one_run_per_folder(tmp_path, capsys):
    data = _image_rows(tmp_path, ["RGB"] * 8)
    run = tmp_path / "run"
    common = [
        "train",
        *TINY,
        "--dataset_name",
        str(data),
        "--dynamic_sampling",
        "false",
        "--output_dir",
        str(run),
        "--max_steps",
        "2",
    ]
    assert vppo_main(common) == 0
    capsys.readouterr()
    assert vppo_main(common) == 2
    assert (
        f"vppo train: output_dir {run} holds another run's checkpoints (checkpoint-1, checkpoint-2): "
        "continue that run with --resume_from_checkpoint last, or start over in it with "
        "--overwrite_output_dir true (deletes them)."
    ) in capsys.readouterr().err
    assert vppo_main([*common, "--overwrite_output_dir", "true", "--max_steps", "1"]) == 0
    assert not (run / "checkpoint-2").exists() and (run / "checkpoint-1").is_dir()
    # a folder in use by a live run (here: this very process) is refused; a dead run's lock is taken over
    import socket

    lock = run / LOCK_FILE
    lock.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": "now"}))
    assert vppo_main([*common, "--resume_from_checkpoint", "last"]) == 2
    assert f"is in use by another vppo train (pid {os.getpid()}" in capsys.readouterr().err
    lock.write_text(
        json.dumps({"pid": 2**22 + 12345, "host": socket.gethostname(), "since": "then"})
    )
    assert vppo_main([*common, "--resume_from_checkpoint", "last"]) == 0
    assert not lock.exists()


def test_resuming_with_changed_settings_says_so(tmp_path, caplog, capsys):
    data = _image_rows(tmp_path, ["RGB"] * 8)
    run = tmp_path / "run"
    common = [
        "train",
        *TINY,
        "--dataset_name",
        str(data),
        "--output_dir",
        str(run),
        "--dynamic_sampling",
        "true",
        "--dynamic_sampling_max_rounds",
        "2",
    ]
    assert vppo_main([*common, "--max_steps", "1"]) == 0
    with caplog.at_level(
        logging.WARNING, logger="vppo.trainer"
    ):  # vppo demo (in-process) quiets it
        assert (
            vppo_main(
                [
                    *common,
                    "--max_steps",
                    "2",
                    "--resume_from_checkpoint",
                    "last",
                    "--token_ratio",
                    "0.5",
                ]
            )
            == 0
        )
    assert f"Resuming {run / 'checkpoint-1'} with token_ratio changed: 0.4 -> 0.5." in caplog.text
    capsys.readouterr()
    # the refill stream was part-way through an epoch laid out in 4-row batches
    assert (
        vppo_main(
            [
                *common,
                "--max_steps",
                "3",
                "--resume_from_checkpoint",
                "last",
                "--per_device_train_batch_size",
                "2",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "cannot resume" in err and "per_device_train_batch_size 4 -> 2" in err


def test_a_multi_line_library_error_reaches_the_user_whole(tmp_path, monkeypatch, capsys):
    """transformers' DeepSpeed check lists the mismatched values on the lines after its first."""
    from transformers import TrainingArguments
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    import vppo.trainer.cli as train_cli

    def mismatched(*args, **kwargs):
        config = HfTrainerDeepSpeedConfig(
            {"train_micro_batch_size_per_gpu": 3, "gradient_accumulation_steps": 5}
        )
        hf = TrainingArguments(
            output_dir=str(tmp_path / "x"), per_device_train_batch_size=4, use_cpu=True
        )
        config.trainer_config_process(hf)
        config.trainer_config_finalize(hf, None, 100)  # raises ValueError with the list

    monkeypatch.setattr(train_cli, "build_trainer", mismatched)
    data = _image_rows(tmp_path, ["RGB"] * 8)
    assert (
        vppo_main(
            ["train", *TINY, "--dataset_name", str(data), "--output_dir", str(tmp_path / "run")]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert (
        "vppo train: Please correct the following DeepSpeed config values that mismatch TrainingArguments "
        "values:\n    - ds train_micro_batch_size_per_gpu=3 vs hf per_device_train_batch_size=4\n"
        "    - ds gradient_accumulation_steps=5 vs hf gradient_accumulation_steps=1\n"
        "    The easiest method is to set these DeepSpeed config values to 'auto'."
    ) in err
    assert "Traceback" not in err


def test_save_steps_that_would_save_mid_rollout_are_refused():
    from vppo.trainer import VPPOConfig

    common = dict(
        output_dir="x",
        use_cpu=True,
        bf16=False,
        per_device_train_batch_size=2,
        num_generations=2,
        gradient_accumulation_steps=2,
        steps_per_generation=6,
        save_strategy="steps",
    )
    assert VPPOConfig(**common, save_steps=6).updates_per_rollout == 3
    with pytest.raises(
        ValueError,
        match=r"save_steps is 5, which saves mid-rollout: one rollout is 3 optimizer "
        r"steps here, so use a multiple of 3 \(e.g. 15",
    ):
        VPPOConfig(**common, save_steps=5)
    assert VPPOConfig(**common, save_steps=5, save_mid_rollout=True).save_steps == 5


def test_a_checkpoint_with_a_renamed_tensor_is_refused(tmp_path, capsys):
    from safetensors.torch import save_file

    from vppo.trainer.resume import read_checkpoint_state, write_checkpoint_state

    data = _image_rows(tmp_path, ["RGB"] * 8)
    run = tmp_path / "run"
    common = [
        "train",
        *TINY,
        "--dataset_name",
        str(data),
        "--dynamic_sampling",
        "false",
        "--output_dir",
        str(run),
    ]
    assert vppo_main([*common, "--max_steps", "1"]) == 0
    checkpoint = run / "checkpoint-1"
    weights = load_file(checkpoint / "model.safetensors")
    name = sorted(weights)[0]
    weights[name + "_renamed"] = weights.pop(name)
    save_file(weights, checkpoint / "model.safetensors", metadata={"format": "pt"})
    state = read_checkpoint_state(checkpoint)
    state.pop("files")
    write_checkpoint_state(checkpoint, state)  # a consistent manifest: only the names are wrong
    capsys.readouterr()
    assert vppo_main([*common, "--max_steps", "2", "--resume_from_checkpoint", "last"]) == 2
    err = capsys.readouterr().err
    assert f"vppo train: checkpoint {checkpoint} does not match the model: 1 weights missing" in err
    assert f"1 unexpected ({name}_renamed)" in err and "Traceback" not in err


def test_a_dataset_smaller_than_one_rollout_is_refused(tmp_path, capsys):
    data = _image_rows(tmp_path, ["RGB"] * 3)
    argv = [
        "train",
        "--config",
        "tiny_vppo",
        "--dataset_name",
        str(data),
        "--output_dir",
        str(tmp_path / "run"),
        "--max_completion_length",
        "8",
        "--min_pixels",
        "3136",
        "--max_pixels",
        "3136",
    ]
    # tiny_vppo's rollout (8 rows of 4 generations) needs 2 prompts; 4 times as many rows per rollout need 8
    assert (
        vppo_main([*argv, "--steps_per_generation", "4", "--gradient_accumulation_steps", "4"]) == 2
    )
    err = capsys.readouterr().err
    assert (
        "vppo train: train_dataset has 3 rows, fewer than one rollout needs: 8 prompts (generation_batch_size "
        "32 = per_device_train_batch_size 8 x steps_per_generation 4 x 1 processes, each prompt sampled "
        "num_generations=4 times), so training would run 0 steps; add rows or lower "
        "per_device_train_batch_size or steps_per_generation."
    ) in err
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_a_step_whose_every_group_is_dropped_says_so(tmp_path, caplog):
    data = _image_rows(tmp_path, ["RGB"] * 8)
    with caplog.at_level(logging.WARNING, logger="vppo.trainer"):
        assert (
            vppo_main(
                [
                    "train",
                    *TINY,
                    "--dataset_name",
                    str(data),
                    "--output_dir",
                    str(tmp_path / "run"),
                    "--max_steps",
                    "1",
                    "--dynamic_sampling",
                    "true",
                    "--nll_coef",
                    "0.06",
                ]
            )
            == 0
        )
    assert (
        "Step 1: dynamic sampling found no group with mixed rewards in 2 rounds (every group's rewards are "
        "uniform), so every advantage is 0 and only the NLL term trains"
    ) in caplog.text
