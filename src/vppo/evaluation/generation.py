"""Generation backends for evaluation: transformers ``generate`` and vLLM.

Both backends receive the same `GenerationRequest` (chat messages with image parts, the prepared
images, a per-sample seed) and the same `SamplingConfig`, and both turn messages into the prompt
text with the model's own processor chat template, so the two produce samples from the same
distribution. The runner never sees which backend it drives.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from PIL import Image

__all__ = [
    "DEFAULT_SYSTEM_PROMPT",
    "GenerationBackend",
    "GenerationRequest",
    "SamplingConfig",
    "TransformersBackend",
    "VLLMBackend",
    "shutdown_vllm_engine",
    "build_backend",
    "request_seed",
    "vllm_available",
]

# The qwen2_vl template of LLaMA-Factory (PAPO-Eval) and the Qwen2.5-VL chat template both use
# this system prompt; it is passed explicitly so models whose template has no default get it too.
DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."


@dataclass(frozen=True)
class SamplingConfig:
    """Decoding settings shared by every backend (PAPO-Eval defaults).

    ``top_k = 50`` is what PAPO-Eval's ``run_infer.py`` used (its function default, which the
    shell script does not override); ``top_k = 0`` turns top-k off. ``temperature = 0`` means
    greedy decoding.
    """

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 50
    max_new_tokens: int = 2048
    repetition_penalty: float = 1.0

    def __post_init__(self) -> None:
        if not self.temperature >= 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}.")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}.")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 disables top-k), got {self.top_k}.")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}.")
        if not self.repetition_penalty > 0:
            raise ValueError(f"repetition_penalty must be > 0, got {self.repetition_penalty}.")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class GenerationRequest:
    """One sample to generate: question ``question_id``, sample number ``sample_index``."""

    question_id: str
    sample_index: int
    messages: list[dict[str, Any]]
    images: list[Image.Image] = field(default_factory=list)
    seed: int = 0


@runtime_checkable
class GenerationBackend(Protocol):
    """What the runner needs: one completion string per request, in request order."""

    name: str

    def generate(
        self, requests: Sequence[GenerationRequest], sampling: SamplingConfig
    ) -> list[str]: ...


def request_seed(seed: int, benchmark: str, question_id: str, sample_index: int) -> int:
    """A 63-bit seed that depends only on (seed, benchmark, question, sample number)."""
    digest = hashlib.sha256(f"{seed}|{benchmark}|{question_id}|{sample_index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)


class _ProcessorPrompts:
    """Prompt text and prompt length through the model's processor (shared by both backends)."""

    processor: Any

    def chat_text(self, request: GenerationRequest) -> str:
        return self.processor.apply_chat_template(
            request.messages, tokenize=False, add_generation_prompt=True
        )

    def prompt_length(self, request: GenerationRequest) -> int:
        """Number of prompt tokens, image tokens included."""
        images = [list(request.images)] if request.images else None
        inputs = self.processor(text=[self.chat_text(request)], images=images, return_tensors="pt")
        return int(inputs["input_ids"].shape[1])


class TransformersBackend(_ProcessorPrompts):
    """``model.generate`` on CPU or GPU: batched, left padding, vision placeholder ids banned.

    All sampling fields are set explicitly, so the checkpoint's own ``generation_config.json``
    (Qwen2.5-VL-Instruct ships top_k=1, top_p=0.001, repetition_penalty=1.05) never leaks in.
    A batch is seeded from its requests' seeds, so a rerun with the same batches repeats itself.
    """

    name = "transformers"

    def __init__(self, model: Any, processor: Any, *, device: str | None = None):
        import torch

        from vppo.models import eos_token_ids, vision_layout

        self.model = model
        self.processor = processor
        if device is not None:
            model.to(device)
        self.device = next(model.parameters()).device
        tokenizer = getattr(processor, "tokenizer", processor)
        tokenizer.padding_side = "left"
        self.tokenizer = tokenizer
        self.eos_token_ids = eos_token_ids(model, tokenizer)
        pad = tokenizer.pad_token_id
        if pad is None:
            pad = getattr(model.generation_config, "pad_token_id", None)
        self.pad_token_id = int(pad if pad is not None else self.eos_token_ids[0])
        self.banned_token_ids = tuple(vision_layout(processor, model.config).pad_token_ids_to_ban)
        self._torch = torch

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        dtype: str = "auto",
        device: str | None = None,
        attn_implementation: str | None = None,
    ) -> TransformersBackend:
        """Load a checkpoint with `vppo.models.load_model_and_processor` and wrap it.

        ``device=None`` picks CUDA when available, else CPU.
        """
        import torch

        from vppo.models import load_model_and_processor

        model, processor = load_model_and_processor(
            path, dtype=dtype, attn_implementation=attn_implementation
        )
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        return cls(model, processor, device=device)

    def _generation_config(self, sampling: SamplingConfig) -> Any:
        from transformers import GenerationConfig

        greedy = sampling.temperature == 0
        kwargs: dict[str, Any] = {
            "do_sample": not greedy,
            "num_beams": 1,
            "max_new_tokens": sampling.max_new_tokens,
            "repetition_penalty": sampling.repetition_penalty,
            "eos_token_id": self.eos_token_ids,
            "pad_token_id": self.pad_token_id,
            "bad_words_ids": [[t] for t in self.banned_token_ids] or None,
        }
        if greedy:  # explicit neutral values keep the checkpoint's sampling fields out
            kwargs.update(temperature=1.0, top_p=1.0, top_k=0)
        else:
            kwargs.update(
                temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k
            )
        return GenerationConfig(**kwargs)

    def generate(
        self, requests: Sequence[GenerationRequest], sampling: SamplingConfig
    ) -> list[str]:
        if not requests:
            return []
        torch = self._torch
        texts = [self.chat_text(r) for r in requests]
        # Nested per prompt: Idefics3/SmolVLM processors need it, Qwen processors flatten it.
        images = [list(r.images) for r in requests] if any(r.images for r in requests) else None
        inputs = self.processor(text=texts, images=images, padding=True, return_tensors="pt").to(
            self.device
        )
        batch_seed = request_seed(0, "batch", ",".join(str(r.seed) for r in requests), 0)
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.inference_mode(), torch.random.fork_rng(devices=devices):
            torch.manual_seed(batch_seed)
            output = self.model.generate(
                **inputs, generation_config=self._generation_config(sampling)
            )
        completions = output[:, inputs["input_ids"].shape[1] :]
        return self.tokenizer.batch_decode(completions, skip_special_tokens=True)

    def close(self) -> None:
        """Nothing to free beyond what garbage collection frees (same interface as VLLMBackend)."""


def vllm_available() -> bool:
    """True when vLLM can be imported (it is an optional GPU dependency)."""
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError as err:
        raise ImportError(
            "the vLLM backend needs the vllm package, which is not installed; install it with "
            "`pip install vllm` on a GPU machine or use --backend transformers."
        ) from err
    return vllm


class VLLMBackend(_ProcessorPrompts):
    """vLLM offline inference (GPU). Prompts are built with the HF processor's chat template,
    exactly as in `TransformersBackend`; every request carries its own seed, so a sample does
    not depend on which batch it ran in. Vision placeholder ids get a logit bias of -100."""

    name = "vllm"

    def __init__(
        self,
        model_path: str | Path,
        *,
        processor: Any = None,
        dtype: str = "auto",
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.9,
        max_model_len: int | None = None,
        max_images_per_prompt: int = 8,
        seed: int = 0,
        llm: Any = None,
    ):
        from vppo.models import load_processor, vision_layout
        from vppo.models.processors import vllm_image_options

        self._vllm = _import_vllm()
        self.processor = processor if processor is not None else load_processor(str(model_path))
        self.banned_token_ids = tuple(vision_layout(self.processor).pad_token_ids_to_ban)
        if llm is None:
            # vLLM resizes images with the processor's pixel range (not the checkpoint's), as the
            # transformers backend does, and profiles its encoder at that size.
            image_options = vllm_image_options(self.processor)
            kwargs: dict[str, Any] = {
                "model": str(model_path),
                "dtype": dtype,
                "tensor_parallel_size": tensor_parallel_size,
                "gpu_memory_utilization": gpu_memory_utilization,
                **image_options,
                "limit_mm_per_prompt": {
                    **image_options.get("limit_mm_per_prompt", {}),
                    "image": max_images_per_prompt,
                },
                "seed": seed,
            }
            if max_model_len is not None:
                kwargs["max_model_len"] = max_model_len
            llm = self._vllm.LLM(**kwargs)
        self.llm = llm

    def sampling_params(self, request: GenerationRequest, sampling: SamplingConfig) -> Any:
        greedy = sampling.temperature == 0
        return self._vllm.SamplingParams(
            n=1,
            temperature=0.0 if greedy else sampling.temperature,
            top_p=1.0 if greedy else sampling.top_p,
            top_k=-1 if greedy or sampling.top_k == 0 else sampling.top_k,
            max_tokens=sampling.max_new_tokens,
            repetition_penalty=sampling.repetition_penalty,
            seed=request.seed,
            # -100 is the strongest bias vLLM accepts (it clamps to ±100): a factor e^-100 on the
            # placeholders' probabilities, so they are never sampled.
            logit_bias={t: -100.0 for t in self.banned_token_ids} or None,
            skip_special_tokens=True,
        )

    def vllm_prompt(self, request: GenerationRequest) -> dict[str, Any]:
        prompt: dict[str, Any] = {"prompt": self.chat_text(request)}
        if request.images:
            prompt["multi_modal_data"] = {"image": list(request.images)}
        return prompt

    def generate(
        self, requests: Sequence[GenerationRequest], sampling: SamplingConfig
    ) -> list[str]:
        if not requests:
            return []
        prompts = [self.vllm_prompt(r) for r in requests]
        params = [self.sampling_params(r, sampling) for r in requests]
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        return [out.outputs[0].text for out in outputs]

    def close(self) -> None:
        """Shut the engine down now (its KV cache and workers), rather than at interpreter exit."""
        shutdown_vllm_engine(self.llm)


def shutdown_vllm_engine(llm: Any) -> None:
    """Free a `vllm.LLM` now: its KV cache and workers (in-process engines hold them until then,
    dropping references is not enough). TRL's colocate engine is `trainer.vllm_generation.llm`."""
    core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
    if core is not None:
        core.shutdown()


def build_backend(
    name: str,
    model_path: str | Path,
    *,
    dtype: str = "auto",
    device: str | None = None,
    tensor_parallel_size: int = 1,
    gpu_memory_utilization: float = 0.9,
    max_model_len: int | None = None,
    seed: int = 0,
) -> GenerationBackend:
    """``"transformers"``, ``"vllm"`` or ``"auto"`` (vLLM when it is installed and a GPU is
    visible, else transformers)."""
    if name not in ("auto", "transformers", "vllm"):
        raise ValueError(f"backend must be 'auto', 'transformers' or 'vllm', got {name!r}.")
    if name == "auto":
        import torch

        name = "vllm" if vllm_available() and torch.cuda.is_available() else "transformers"
    if name == "vllm":
        return VLLMBackend(
            model_path,
            dtype=dtype,
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
            seed=seed,
        )
    return TransformersBackend.from_pretrained(model_path, dtype=dtype, device=device)
