"""TRL's `vllm_mode: server` against a real vLLM server (CPU build) started on localhost.

The server is vLLM's own OpenAI-compatible server started with the flags `trl vllm-serve` passes
(`--enable-scale-out`, processed log-probs, the NCCL weight-transfer engine, the development
endpoints), through a launcher that only fixes the CPU build's package name
(tests/cpu_engines/vllm_serve_cpu.py). TRL 1.16 synchronises weights only over NCCL from a CUDA
device (`VLLMClient.init_communicator` raises NotImplementedError on any other device; the canary
below fails when that changes). So on CPU one rollout runs with the weights the server loaded, which
are the trainer's at step 0, and the test compares what the server sampled with what the trainer
computes on the same rows: the log-probability of every sampled token (the server echoes the
prompt ids it was sent, so log-probs are what shows the server ran the trainer's prompt; a prompt
with its image placeholders expanded twice moves them by 0.1-1 nats).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from test_vllm_equality import MAX_NEW_TOKENS, TOLERANCE, _biased_and_full_logps, _rows

from vppo.models import build_tiny_vlm, load_model_and_processor
from vppo.trainer import VPPOConfig, VPPOTrainer

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("vllm_engine_ready")]

LAUNCHER = Path(__file__).resolve().parents[1] / "cpu_engines" / "vllm_serve_cpu.py"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """(base_url, model folder) of a vLLM server on a tiny random Qwen2.5-VL."""
    import socket

    folder = tmp_path_factory.mktemp("served_qwen")
    build_tiny_vlm("qwen2_5_vl", save_dir=folder, min_pixels=56 * 56, max_pixels=112 * 112)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        **os.environ,
        "VLLM_TARGET_DEVICE": "cpu",
        "VLLM_SERVER_DEV_MODE": "1",
        "HF_HUB_OFFLINE": "1",
    }
    log = open(folder / "server.log", "w")  # noqa: SIM115 - closed at teardown
    process = subprocess.Popen(
        [
            sys.executable,
            str(LAUNCHER),
            "serve",
            str(folder),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--dtype",
            "float32",
            "--max-model-len",
            "512",
            "--enforce-eager",
            "--enable-scale-out",
            "--logprobs-mode",
            "processed_logprobs",
            "--max-logprobs",
            "-1",
            "--weight-transfer-config",
            '{"backend": "nccl"}',
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            log.close()
            pytest.fail(
                "the vLLM server did not start:\n" + (folder / "server.log").read_text()[-3000:]
            )
        time.sleep(2)
    yield url, folder
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()


def test_weight_sync_needs_cuda_canary(server):
    """What keeps server-mode training off CPU: TRL's weight sync. When this fails, TRL can sync
    from a CPU process: make the test below train for several steps with real weight sync."""
    from trl.generation.vllm_client import VLLMClient

    url, _ = server
    with pytest.raises(NotImplementedError, match="needs a CUDA device"):
        VLLMClient(base_url=url).init_communicator(device="cpu")


def test_server_mode_samples_from_the_trainers_prompt(server, monkeypatch, tmp_path):
    from trl.generation.vllm_client import VLLMClient

    url, folder = server
    monkeypatch.setattr(VLLMClient, "init_communicator", lambda self, device=0: None)  # NCCL only
    model, processor = load_model_and_processor(folder, dtype="float32")
    rows = _rows()
    data = Dataset.from_list([{"prompt": messages, "images": images} for messages, images in rows])
    args = VPPOConfig(
        output_dir=str(tmp_path),
        use_vllm=True,
        vllm_mode="server",
        vllm_server_base_url=url,
        vllm_importance_sampling_correction=True,
        vllm_importance_sampling_mode="token_truncate",
        per_device_train_batch_size=6,
        num_generations=2,
        max_completion_length=MAX_NEW_TOKENS,
        max_steps=1,
        bf16=False,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        dynamic_sampling=False,
        seed=0,
        temperature=1.0,
        top_p=1.0,
        shuffle_dataset=False,
    )
    trainer = VPPOTrainer(
        model=model,
        reward_funcs=[lambda completions, **_: [0.0] * len(completions)],
        args=args,
        train_dataset=data,
        processing_class=processor,
    )
    trainer._last_loaded_step = 0  # the server already holds these weights; no sync without NCCL
    scored = []
    score = trainer._generate_and_score_completions

    def recording_score(inputs):
        output = score(inputs)
        kept = {k: v.detach().clone() if torch.is_tensor(v) else v for k, v in output.items()}
        kept["biased_logps"], kept["full_logps"] = _biased_and_full_logps(trainer, kept)
        scored.append(kept)
        return output

    trainer._generate_and_score_completions = recording_score
    trainer.train()
    (output,) = scored
    mask = output["completion_mask"].bool()
    placeholder = trainer.vision.image_token_id
    counts = sorted(int((ids == placeholder).sum()) for ids in output["prompt_ids"])
    assert counts == [0, 0, 4, 4, 18, 18]  # one image of 4 tokens, two of 6 + 12, none
    assert mask.sum() >= 6
    assert (output["sampling_per_token_logps"] - output["biased_logps"])[
        mask
    ].abs().max() < TOLERANCE
    assert (output["old_per_token_logps"] - output["full_logps"])[mask].abs().max() < TOLERANCE
