"""Sharded training on CPU: FSDP2 and DeepSpeed ZeRO-3 over 2 processes (gloo), launched by the
shipped configs' names.

VPPO (k3 and exact KL) and DAPO train for 2 steps with dynamic sampling and TAS gathered across
ranks. For the first rollout the workers record their rows; the test then recomputes, in this
single process and with the unsharded initial model, the per-token dependency of the same rows
(same perturbed pixels) and the per-token advantages of the union of both ranks' rows, and
requires both to equal what the sharded run computed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vppo.algorithm import token_advantages
from vppo.demo import default_checkpoint
from vppo.models import load_model_and_processor, vision_layout
from vppo.perception import distribution_dependency, token_dependency
from vppo.trainer.launch import accelerate_argv, shipped_configs, split_arguments

pytestmark = pytest.mark.slow

WORKER = Path(__file__).with_name("sharded_worker.py")
REWARD = '''
import random

def half_uniform(completions, answer, **kwargs):
    """Even answers always score 1 (their groups are dropped); odd ones are random."""
    return [1.0 if int(a) % 2 == 0 else float(random.random() < 0.5) for a in answer]
'''


def _launch(
    tmp_path: Path,
    name: str,
    extra: list[str],
    env: dict[str, str],
    port: int,
    worker: bool = True,
    config: str = "fsdp2_8gpu",
    text_only_rows: int = 0,
    expect_success: bool = True,
    reward: str = REWARD,
):
    """Train tiny_vppo on 2 CPU processes with a shipped accelerate config; returns output_dir
    (with `expect_success=False`, the finished process)."""
    (tmp_path / "reward.py").write_text(reward)
    from PIL import Image

    for i in range(4):  # a distinct picture per row
        Image.new("RGB", (56, 56), (60 * i, 200 - 40 * i, 30)).save(tmp_path / f"img{i}.png")
    rows = [
        {"images": [f"img{i % 4}.png"], "problem": f"<image>What is {i}?", "answer": str(i)}
        for i in range(16)
    ]
    for i in range(text_only_rows):
        rows[-1 - i] = {"images": [], "problem": f"What is {i}?", "answer": str(i)}
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    out = tmp_path / name
    argv = [
        "--accelerate_config",
        config,
        "--num_processes",
        "2",
        "--mixed_precision",
        "no",
        "--main_process_port",
        str(port),
        "--config",
        "tiny_vppo",
        "--dataset_name",
        str(tmp_path / "train.jsonl"),
        "--reward_funcs",
        f"{tmp_path / 'reward.py'}:half_uniform",
        "--dynamic_sampling_reward",
        "half_uniform",
        "--dynamic_sampling_max_rounds",
        "2",
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
        "--save_strategy",
        "no",
        "--output_dir",
        str(out),
        *extra,
    ]
    if worker:
        launch, train = split_arguments(argv)
        command = [sys.executable, "-m", "accelerate.commands.launch", *launch, str(WORKER), *train]
    else:
        command = [sys.executable, "-m", "vppo.cli", "train", *argv]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path
    )
    if not expect_success:
        return result
    errors = [
        line for line in result.stderr.splitlines() if "vppo train:" in line or "Error" in line
    ]
    assert result.returncode == 0, "\n".join(errors)[-4000:]
    return out


def test_named_configs_resolve_and_split_the_arguments():
    assert {"fsdp2_8gpu", "fsdp2_32gpu", "zero3_8gpu", "zero3_32gpu"} <= set(shipped_configs())
    args = accelerate_argv(
        [
            "--accelerate_config",
            "zero3_32gpu",
            "--machine_rank",
            "2",
            "--main_process_ip",
            "10.0.0.1",
            "--config",
            "qwen2_5_vl_32b_vppo",
            "--learning_rate",
            "1e-6",
        ]
    )
    assert args[0] == "--config_file" and args[1].endswith("recipes/accelerate/zero3_32gpu.yaml")
    assert args[2:6] == ["--machine_rank", "2", "--main_process_ip", "10.0.0.1"]
    assert args[6:] == [
        "--module",
        "vppo.cli",
        "train",
        "--config",
        "qwen2_5_vl_32b_vppo",
        "--learning_rate",
        "1e-6",
    ]
    with pytest.raises(FileNotFoundError, match="shipped configs are .*fsdp2_8gpu"):
        accelerate_argv(["--accelerate_config", "zero9"])


def _single_process_logps(model, record, pixel_values, temperature=1.0):
    """Per-token log-probs of the recorded completions and the full logits, unsharded model."""
    ids = torch.cat([record["prompt_ids"], record["completion_ids"]], dim=1)
    attention = torch.cat([record["prompt_mask"], record["completion_mask"]], dim=1)
    t = record["completion_ids"].size(1)
    extra = {k: record[k] for k in record["forward_keys"]}  # image_grid_thw, mm_token_type_ids, ...
    extra["pixel_values"] = pixel_values
    with torch.no_grad():
        logits = (
            model(input_ids=ids, attention_mask=attention, **extra).logits[:, -t - 1 : -1].float()
        )
    logits = logits / temperature
    logp = torch.log_softmax(logits, -1).gather(-1, record["completion_ids"][..., None]).squeeze(-1)
    return logp, logits


# Plain data parallelism (DDP): accelerate's torchrun launcher (MULTI_GPU); on CPU processes
# accelerate runs it as MULTI_CPU with gloo. The unsharded engine beside FSDP2 and ZeRO-3.
DDP_CONFIG = """compute_environment: LOCAL_MACHINE
distributed_type: MULTI_GPU
num_machines: 1
num_processes: 2
mixed_precision: "no"
"""


@pytest.mark.parametrize(
    ("config", "estimator"),
    [
        ("fsdp2_8gpu", "k3"),
        ("fsdp2_8gpu", "kl"),
        ("zero3_8gpu", "k3"),
        ("zero3_8gpu", "kl"),
        ("ddp", "k3"),
    ],
)
def test_sharded_vppo_equals_a_single_process(
    tmp_path, config, estimator, subprocess_env, free_port
):
    if config == "ddp":
        (tmp_path / "ddp.yaml").write_text(DDP_CONFIG)
        config = str(tmp_path / "ddp.yaml")
    # ZeRO-3 partitions parameters while the model is built (zero.Init), which transformers'
    # initialisation of a model built from a config does not survive: it loads the warm start.
    built = not config.startswith("zero3")
    model_flags = (
        [] if built else ["--model_name_or_path", "warmstart", "--prompt_template", "plain"]
    )
    out = _launch(
        tmp_path,
        f"vppo_{estimator}",
        ["--dependency_estimator", estimator, *model_flags],
        subprocess_env(VPPO_TEST_DUMP=str(tmp_path)),
        free_port,
        config=config,
    )
    records = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    initial = out / "tiny_model" if built else default_checkpoint()
    model, _ = load_model_and_processor(initial, dtype="float32")
    model.eval()
    full = sum(p.numel() for p in model.parameters())
    for record in records:
        sharding = record["sharding"]
        assert sharding["full_numel"] == full
        if config.endswith("ddp.yaml"):  # every rank holds the whole model
            assert sharding["local_numel"] == full
        else:
            assert not sharding["not_sharded"]
            if config.startswith("zero3"):  # FSDP2: not_sharded already covers the LM head
                assert sharding["head_partitioned"]
            assert sharding["local_numel"] < 0.75 * full  # each rank holds about half
        mask = record["completion_mask"].bool()
        logp_real, logits_real = _single_process_logps(model, record, record["pixel_values"])
        logp_pert, logits_pert = _single_process_logps(
            model, record, record["perturbed_pixel_values"]
        )
        if estimator == "k3":  # the sampled-token log-probs of both passes, sharded = unsharded
            torch.testing.assert_close(
                record["logp_real"][mask], logp_real[mask], rtol=0, atol=1e-5
            )
            torch.testing.assert_close(
                record["logp_perturbed"][mask], logp_pert[mask], rtol=0, atol=1e-5
            )
            expected = token_dependency(logp_real, logp_pert, mask, estimator="k3", clip=10.0)
        else:
            expected = distribution_dependency(logits_real, logits_pert, mask, "kl")
        torch.testing.assert_close(record["dep"], expected, rtol=1e-4, atol=1e-5)
        assert expected[mask].abs().sum() > 0

    # TAS over the global batch: both ranks' rows together, as one process would see them.
    width = max(r["completion_mask"].size(1) for r in records)

    def cat(key):
        return torch.cat(
            [torch.nn.functional.pad(r[key], (0, width - r[key].size(1))) for r in records]
        )

    union = token_advantages(
        torch.cat([r["advantages"] for r in records]),
        cat("dep"),
        cat("completion_mask").bool(),
        ratio=0.4,
        beta_min=0.9,
        beta_max="dynamic",
    )
    torch.testing.assert_close(cat("token_advantages"), union, rtol=1e-5, atol=1e-6)


def _text_only_logps(model, record, vision_ids):
    """Per-token log-probs of the recorded completions after the prompt without its vision tokens:
    one unpadded forward per row, no image tensor (the no-image reference, computed row by row)."""
    logp = torch.zeros(record["completion_mask"].shape)
    for row in range(logp.size(0)):
        prompt = record["prompt_ids"][row][record["prompt_mask"][row].bool()]
        prompt = prompt[~torch.isin(prompt, torch.tensor(sorted(vision_ids)))]
        n = int(record["completion_mask"][row].sum())
        ids = torch.cat([prompt, record["completion_ids"][row, :n]])[None]
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0]
        logits = logits[prompt.numel() - 1 : prompt.numel() + n - 1].float()
        tokens = record["completion_ids"][row, :n]
        logp[row, :n] = torch.log_softmax(logits, -1).gather(1, tokens[:, None])[:, 0]
    return logp


def test_sharded_no_image_reference_equals_a_single_process(tmp_path, subprocess_env, free_port):
    """perturbation 'none' under FSDP2: the text-only pass's log-probs and the dependency equal an
    unsharded, row-by-row forward of each prompt without its vision tokens."""
    out = _launch(
        tmp_path,
        "vppo_none",
        ["--perturbation", "none"],
        subprocess_env(VPPO_TEST_DUMP=str(tmp_path)),
        free_port,
    )
    model, processor = load_model_and_processor(out / "tiny_model", dtype="float32")
    model.eval()
    vision_ids = set(vision_layout(processor, model.config).pad_token_ids_to_ban)
    for rank in (0, 1):
        record = torch.load(tmp_path / f"rank{rank}.pt")
        assert "perturbed_pixel_values" not in record
        mask = record["completion_mask"].bool()
        logp_real, _ = _single_process_logps(model, record, record["pixel_values"])
        logp_text = _text_only_logps(model, record, vision_ids)
        torch.testing.assert_close(record["logp_real"][mask], logp_real[mask], rtol=0, atol=1e-5)
        torch.testing.assert_close(
            record["logp_perturbed"][mask], logp_text[mask], rtol=0, atol=1e-5
        )
        expected = token_dependency(logp_real, logp_text, mask, estimator="k3", clip=10.0)
        torch.testing.assert_close(record["dep"], expected, rtol=1e-4, atol=1e-5)
        assert expected[mask].abs().sum() > 0


@pytest.mark.parametrize("config", ["fsdp2_8gpu", "zero3_8gpu"])
def test_sharded_papo_masked_forward_with_gradient_equals_a_single_process(
    tmp_path, config, subprocess_env, free_port
):
    """PAPO with papo_masked_grad: the update's second forward (masked images, with gradient) on
    sharded weights gives the unsharded model's log-probs on the same micro-batch."""
    built = not config.startswith("zero3")
    model_flags = (
        [] if built else ["--model_name_or_path", "warmstart", "--prompt_template", "plain"]
    )
    papo = ["--token_selection", "none", "--use_tas", "false", "--papo_coef", "0.01"]
    papo += ["--papo_masked_entropy_coef", "0.03", "--papo_masked_grad", "true"]
    papo += ["--perturbation", "blacken_image", "--perturbation_prob", "0.6"]
    papo += ["--perturbation_patch_size", "14"]
    out = _launch(
        tmp_path,
        "papo_grad",
        [*papo, *model_flags],
        subprocess_env(VPPO_TEST_DUMP=str(tmp_path)),
        free_port,
        config=config,
    )
    initial = out / "tiny_model" if built else default_checkpoint()
    model, _ = load_model_and_processor(initial, dtype="float32")
    model.eval()
    for rank in (0, 1):
        record = torch.load(tmp_path / f"masked{rank}.pt")
        assert record["requires_grad"]
        masked_pixels = record["papo_masked_pixel_values"]
        assert masked_pixels.shape == record["pixel_values"].shape
        assert not torch.equal(masked_pixels, record["pixel_values"])
        mask = record["completion_mask"].bool()
        expected, _ = _single_process_logps(model, record, masked_pixels)
        # The first micro-batch trains on the initial weights: sharded = unsharded to float32.
        torch.testing.assert_close(record["logps"][mask], expected[mask], rtol=0, atol=1e-5)
        real, _ = _single_process_logps(model, record, record["pixel_values"])
        assert (real - expected)[mask].abs().max() > 1e-4  # the masked images change the log-probs


def test_fsdp2_dapo_trains_through_vppo_train_by_config_name(tmp_path, subprocess_env, free_port):
    out = _launch(
        tmp_path,
        "dapo",
        [
            "--token_selection",
            "none",
            "--use_tas",
            "false",
            "--save_strategy",
            "steps",
            "--save_steps",
            "2",
        ],
        subprocess_env(),
        free_port,
        worker=False,
    )
    state = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())
    logs = [entry for entry in state["log_history"] if "loss" in entry]
    assert len(logs) == 2 and all(e["vppo/dynamic_sampling/dropped_frac"] > 0 for e in logs)
    assert all("vppo/dependency_mean" not in e for e in logs)


@pytest.mark.parametrize("config", ["fsdp2_8gpu", "zero3_8gpu"])
def test_sharded_training_refuses_text_only_rows_up_front(
    tmp_path, config, subprocess_env, free_port
):
    """A rank whose micro-batch has no image would skip the sharded vision tower while the other
    gathers it (a hang): refused before training, in one sentence, on every rank."""
    model_flags = (
        []
        if config.startswith("fsdp")
        else ["--model_name_or_path", "warmstart", "--prompt_template", "plain"]
    )
    result = _launch(
        tmp_path,
        "mixed",
        model_flags,
        subprocess_env(),
        free_port,
        worker=False,
        config=config,
        text_only_rows=3,
        expect_success=False,
    )
    assert result.returncode != 0
    engine = "FSDP" if config.startswith("fsdp") else "DeepSpeed ZeRO-3"
    message = (
        f"vppo train: train_dataset has 3 rows without an image (the first is row 13); under "
        f"{engine} a process whose micro-batch holds no image"
    )
    assert message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("config", ["fsdp2_8gpu", "zero3_8gpu"])
def test_sharded_resume_with_dynamic_sampling_equals_the_uninterrupted_run(
    tmp_path, config, subprocess_env, free_port
):
    """VPPO with dynamic sampling and refills on 2 processes: resumed from checkpoint-2 (what a run
    killed after that save leaves, in a fresh folder), the run ends where the uninterrupted one does:
    the same logged metrics and bit-identical final weights."""
    import shutil

    from safetensors.torch import load_file

    model_flags = (
        []
        if config.startswith("fsdp")
        else ["--model_name_or_path", "warmstart", "--prompt_template", "plain"]
    )
    steps = ["--max_steps", "4", "--save_strategy", "steps", "--save_steps", "2", *model_flags]
    full = _launch(
        tmp_path, "full", steps, subprocess_env(), free_port, worker=False, config=config
    )
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(full / "checkpoint-2", resumed / "checkpoint-2")
    _launch(
        tmp_path,
        "resumed",
        [*steps, "--resume_from_checkpoint", "last"],
        subprocess_env(),
        free_port,
        worker=False,
        config=config,
    )

    def history(run):
        log = json.loads((run / "checkpoint-4" / "trainer_state.json").read_text())["log_history"]
        return [
            {
                k: v
                for k, v in e.items()
                if "time" not in k and "per_second" not in k and k != "train_runtime"
            }
            for e in log
        ]

    assert history(full) == history(resumed)
    logs = [e for e in history(full) if "loss" in e]
    assert len(logs) == 4 and all(e["vppo/dynamic_sampling/extra_rounds"] >= 1 for e in logs)
    a, b = load_file(full / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


PRE_EMPTED = (
    REWARD
    + """
import os, signal

calls = []

def pre_empted(completions, answer, **kwargs):
    \"\"\"Rank 1 alone receives SIGTERM while the second step's rollout is scored.\"\"\"
    calls.append(1)
    if os.environ.get("RANK") == "1" and len(calls) == 2:
        os.kill(os.getpid(), signal.SIGTERM)
    return half_uniform(completions, answer)
"""
)


def test_sigterm_on_one_process_saves_on_all_and_resumes(tmp_path, subprocess_env, free_port):
    """The processes agree on the step to stop at (a checkpoint is a collective), save it together,
    and the run continues from it with --resume_from_checkpoint last."""
    common = [
        "--reward_funcs",
        f"{tmp_path / 'reward.py'}:pre_empted",
        "--dynamic_sampling",
        "false",
        "--max_steps",
        "4",
    ]
    result = _launch(
        tmp_path,
        "run",
        common,
        subprocess_env(),
        free_port,
        worker=False,
        expect_success=False,
        reward=PRE_EMPTED,
    )
    assert result.returncode == 143, result.stderr[-3000:]
    out = tmp_path / "run"
    assert (out / "checkpoint-2" / "vppo_trainer_state.json").is_file()
    assert "vppo train: stopped by SIGTERM at step 2; saved:" in result.stderr
    assert "Traceback" not in result.stderr
    plain = (
        REWARD
        + "\ndef pre_empted(completions, answer, **kwargs):\n    return half_uniform(completions, answer)\n"
    )
    resumed = _launch(
        tmp_path,
        "run",
        [*common, "--resume_from_checkpoint", "last"],
        subprocess_env(),
        free_port,
        worker=False,
        expect_success=False,
        reward=plain,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"vppo train: 4 steps trained; the model is in {out}." in resumed.stderr
