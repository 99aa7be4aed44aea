"""``vppo plan``: the per-GPU memory budget of a recipe, with the arithmetic shown.

    vppo plan --config qwen2_5_vl_7b_vppo --gpus 8
    vppo plan --config qwen2_5_vl_32b_vppo --gpus 32 --nodes 4
    vppo plan --config my_recipe.yaml --gpus 8 --model /path/to/checkpoint --gpu-memory-gb 150

The budget adds up what one GPU holds in each phase of a training step, as the trainer runs it:

- **generation**: the sharded model states, the colocated vLLM engine (its whole
  `vllm_gpu_memory_utilization` share of the card's total memory, which is what vLLM reserves)
  and the rollout's `pixel_values`; with dynamic sampling, also the refill round being generated
  beside the rounds kept so far. The previous rollout's micro-batches are freed before it starts.
- **merge** (dynamic sampling): the kept rows of every round gathered into one batch while the
  rounds are still alive (three rollouts' worth of `pixel_values` at most).
- **scoring**: the no-grad forwards for old and perturbed-image log-probs (VPPO) at the micro-batch;
- **update**: a forward/backward with gradient checkpointing at the micro-batch, with TRL's fused
  LM head, which scores the vocabulary in tiles and never builds [B, T, V] logits.

The peak is the largest phase. Everything is plain arithmetic on the recipe and the model's
config (no torch). The image size is the one `vppo train` resolves: the recipe's `max_pixels`,
else the model folder's recorded one, else vppo's default. GB = 10^9 bytes, and `--gpu-memory-gb`
is the card's total memory as CUDA reports it (an "80 GB" H100 or A100 reports 85.0 x 10^9
bytes, 79.2 GiB; an H200 150). It is an estimate: allocator fragmentation is not modelled, hence
the recipes keep a margin below the card (tests/trainer/test_plan.py asks for 8%). The exit status is 0
when the peak fits, 1 when it does not, 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from vppo.algorithm import TOKEN_SELECTIONS
from vppo.data.images import DEFAULT_MAX_PIXELS
from vppo.data.settings import OneLineParser, read_yaml_file
from vppo.perception import DISTRIBUTION_ESTIMATORS
from vppo.trainer.recipes import RECIPES_DIR, load_recipe

__all__ = [
    "BUILTIN_MODELS",
    "CARD_GB",
    "MemoryPlan",
    "ModelShape",
    "Sharding",
    "build_plan",
    "format_plan",
    "main",
    "model_shape",
    "parameter_counts",
    "read_sharding",
    "recipe_max_pixels",
]

GB = 1e9
# Total memory of an "80 GB" H100 or A100 as CUDA reports it (torch.cuda.mem_get_info): 79.2 GiB.
# vLLM's share is a fraction of this total.
CARD_GB = 85.0
ACCELERATE_DIR = RECIPES_DIR / "accelerate"

# Fixed per-GPU costs that do not scale with the model: CUDA context and kernels (~1 GB), NCCL
# communicators and their buffers (~1 GB), DeepSpeed/FSDP communication buckets (~1 GB).
CUDA_OVERHEAD_GB = 3.0
# What vLLM keeps while asleep. TRL 1.16 sleeps at level 2 (trl/generation/vllm_generation.py:
# `self.llm.sleep(level=2)`), which frees the weights and the KV cache; the CUDA-graph pool and
# sampler buffers stay. Assumed, to be measured on a GPU.
VLLM_SLEEP_RESIDUAL_GB = 2.0
# Text tokens of a prompt besides the image: the official template (~70 tokens) plus a ViRL39K
# question (TRL 1.16 has no prompt-length field to read; see max_prompt_tokens for vppo's cap).
PROMPT_TEXT_TOKENS = 300
# TRL 1.16's fused LM head (trl/kernels/chunked_logprob.py) projects [tokens, vocabulary] tiles of
# at most TOKEN_CHUNK_SIZE x _CHUNKED_LOGPROB_CHUNK_SIZE; its backward accumulates the head's
# weight gradient [V, H] and the hidden states' gradient [N, H] in float32.
HEAD_TILE_TOKENS = 4096
HEAD_TILE_VOCAB = 32768
# Sharded engines gather whole modules: the current one, the prefetched next one, and (backward)
# the full gradient before its reduce-scatter.
GATHERED_MODULES = 3

# Defaults of the recipe fields the plan reads (TRL 1.16 GRPOConfig / vppo's TrainScriptArguments
# and VPPOConfig), for recipes that leave them out. tests/trainer/test_plan.py checks them against the code.
RECIPE_DEFAULTS = {
    "per_device_train_batch_size": 8,
    "gradient_accumulation_steps": 1,
    "steps_per_generation": None,  # None: gradient_accumulation_steps
    "max_completion_length": 2048,
    "use_vllm": False,
    "vllm_mode": "colocate",
    "vllm_gpu_memory_utilization": 0.3,
    "vllm_tensor_parallel_size": 1,
    "vllm_enable_sleep_mode": False,
    "gradient_checkpointing": True,
    "bf16": True,
    "num_generations": 8,
    "token_selection": "topk",
    "use_tas": True,
    "dependency_estimator": "k3",
    "kl_chunk_size": 1024,
    "dynamic_sampling": True,
    "papo_coef": 0.0,
    "papo_masked_entropy_coef": 0.0,
    "papo_masked_grad": False,
}


# ---------------------------------------------------------------------------------------------
# Model shapes
# ---------------------------------------------------------------------------------------------
FAMILIES = ("qwen2_5_vl", "qwen3_vl", "qwen3_5")
# Vision towers with LayerNorms, a plain MLP and a learned position table (Qwen3-VL's, which
# Qwen3.5 reuses without DeepStack).
_QWEN3_VISION = ("qwen3_vl", "qwen3_5")
# Bytes of a gated-delta-net layer's recurrent [heads, k_dim, v_dim] state per element: float32,
# in vLLM (the released Qwen3.5 configs set mamba_ssm_dtype float32, which vLLM's cache follows)
# and in transformers (its delta-rule kernels keep the state in float32).
RECURRENT_STATE_BYTES = 4


@dataclass(frozen=True)
class ModelShape:
    """The architecture numbers the budget needs (a Qwen2.5-VL, Qwen3-VL or Qwen3.5 config.json).

    Qwen3.5 (family "qwen3_5"): `linear_layers` of the `num_layers` decoder layers are gated
    delta nets (linear attention, a fixed-size recurrent state per sequence instead of a KV
    cache); the others are full attention with a gated output (q_proj twice as wide).
    """

    family: str  # "qwen2_5_vl", "qwen3_vl" or "qwen3_5": fixes biases, norms and the vision MLP
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool
    vision_depth: int
    vision_hidden_size: int
    vision_intermediate_size: int
    vision_out_hidden_size: int
    patch_size: int
    spatial_merge_size: int
    temporal_patch_size: int
    in_channels: int = 3
    vision_position_embeddings: int = 0  # Qwen3-VL: learned position table
    deepstack_layers: int = 0  # Qwen3-VL: extra mergers feeding early decoder layers
    linear_layers: int = 0  # Qwen3.5: gated-delta-net layers (the rest are full attention)
    linear_num_key_heads: int = 0
    linear_num_value_heads: int = 0
    linear_key_head_dim: int = 0
    linear_value_head_dim: int = 0
    linear_conv_kernel: int = 4
    source: str = ""

    @property
    def full_attention_layers(self) -> int:
        """Decoder layers with a KV cache."""
        return self.num_layers - self.linear_layers

    @property
    def linear_conv_dim(self) -> int:
        """Channels of a gated delta net's causal convolution (its q, k and v)."""
        return (
            2 * self.linear_num_key_heads * self.linear_key_head_dim
            + self.linear_num_value_heads * self.linear_value_head_dim
        )

    def recurrent_state_bytes(self, conv_positions: int, conv_bytes: int) -> int:
        """One sequence's state over every gated-delta-net layer: the convolution's last
        `conv_positions` inputs and the [value heads, k_dim, v_dim] delta-rule state."""
        delta = self.linear_num_value_heads * self.linear_key_head_dim * self.linear_value_head_dim
        return self.linear_layers * (
            self.linear_conv_dim * conv_positions * conv_bytes + delta * RECURRENT_STATE_BYTES
        )


# The real models' config.json values (Hugging Face Hub, `config.json` of each repository; the
# Hub is not needed at run time). Parameter counts computed from them match the model cards:
# 8.29 B, 33.45 B and 8.77 B (tests/trainer/test_plan.py also builds them on the meta device).
def _builtin(repo: str, family: str, **shape: object) -> ModelShape:
    """A released checkpoint's shape; what the three share (128-wide heads, untied head, 2x2 merge,
    2-frame patches) is filled in."""
    common = dict(
        head_dim=128, tie_word_embeddings=False, spatial_merge_size=2, temporal_patch_size=2
    )
    return ModelShape(
        family=family, **{**common, **shape}, source=f"{repo} (built in, from its config.json)"
    )


BUILTIN_MODELS: dict[str, ModelShape] = {
    "Qwen/Qwen2.5-VL-7B-Instruct": _builtin(
        "Qwen/Qwen2.5-VL-7B-Instruct",
        "qwen2_5_vl",
        hidden_size=3584,
        num_layers=28,
        num_heads=28,
        num_kv_heads=4,
        intermediate_size=18944,
        vocab_size=152064,
        vision_depth=32,
        vision_hidden_size=1280,
        vision_intermediate_size=3420,
        vision_out_hidden_size=3584,
        patch_size=14,
    ),
    "Qwen/Qwen2.5-VL-32B-Instruct": _builtin(
        "Qwen/Qwen2.5-VL-32B-Instruct",
        "qwen2_5_vl",
        hidden_size=5120,
        num_layers=64,
        num_heads=40,
        num_kv_heads=8,
        intermediate_size=27648,
        vocab_size=152064,
        vision_depth=32,
        vision_hidden_size=1280,
        vision_intermediate_size=3456,
        vision_out_hidden_size=5120,
        patch_size=14,
    ),
    "Qwen/Qwen3-VL-8B-Instruct": _builtin(
        "Qwen/Qwen3-VL-8B-Instruct",
        "qwen3_vl",
        hidden_size=4096,
        num_layers=36,
        num_heads=32,
        num_kv_heads=8,
        intermediate_size=12288,
        vocab_size=151936,
        vision_depth=27,
        vision_hidden_size=1152,
        vision_intermediate_size=4304,
        vision_out_hidden_size=4096,
        patch_size=16,
        vision_position_embeddings=2304,
        deepstack_layers=3,
    ),
    # Not read from the Hub here (offline): transformers 5.23's Qwen3_5TextConfig defaults, which its
    # docstring calls "the Qwen3.5-9B style configuration" (24 of the 32 layers gated delta nets:
    # full attention every 4th), with the vision tower's output at the decoder's width 4096.
    "Qwen/Qwen3.5-9B": _builtin(
        "Qwen/Qwen3.5-9B",
        "qwen3_5",
        hidden_size=4096,
        num_layers=32,
        num_heads=16,
        num_kv_heads=4,
        head_dim=256,
        intermediate_size=12288,
        vocab_size=248320,
        vision_depth=27,
        vision_hidden_size=1152,
        vision_intermediate_size=4304,
        vision_out_hidden_size=4096,
        patch_size=16,
        vision_position_embeddings=2304,
        linear_layers=24,
        linear_num_key_heads=16,
        linear_num_value_heads=32,
        linear_key_head_dim=128,
        linear_value_head_dim=128,
        linear_conv_kernel=4,
    ),
}


def _shape_from_config(config, source: str) -> ModelShape:
    """A ModelShape from a transformers config object (or anything with the same attributes)."""
    family = config.model_type
    qwen3 = family in _QWEN3_VISION  # learned vision positions (and DeepStack in Qwen3-VL)
    text, vision = config.text_config, config.vision_config
    layer_types = list(getattr(text, "layer_types", None) or [])
    linear = {}
    if family == "qwen3_5":
        linear = dict(
            linear_layers=layer_types.count("linear_attention"),
            linear_num_key_heads=text.linear_num_key_heads,
            linear_num_value_heads=text.linear_num_value_heads,
            linear_key_head_dim=text.linear_key_head_dim,
            linear_value_head_dim=text.linear_value_head_dim,
            linear_conv_kernel=text.linear_conv_kernel_dim,
        )
    return ModelShape(
        family=family,
        hidden_size=text.hidden_size,
        num_layers=text.num_hidden_layers,
        num_heads=text.num_attention_heads,
        num_kv_heads=text.num_key_value_heads,
        head_dim=getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads,
        intermediate_size=text.intermediate_size,
        vocab_size=text.vocab_size,
        tie_word_embeddings=bool(getattr(config, "tie_word_embeddings", False)),
        vision_depth=vision.depth,
        vision_hidden_size=vision.hidden_size,
        vision_intermediate_size=vision.intermediate_size,
        vision_out_hidden_size=vision.out_hidden_size,
        patch_size=vision.patch_size,
        spatial_merge_size=vision.spatial_merge_size,
        temporal_patch_size=vision.temporal_patch_size,
        in_channels=getattr(vision, "in_channels", 3),
        vision_position_embeddings=getattr(vision, "num_position_embeddings", 0) if qwen3 else 0,
        deepstack_layers=len(getattr(vision, "deepstack_visual_indexes", ()) or ()) if qwen3 else 0,
        **linear,
        source=source,
    )


def _read_json(file: Path) -> dict:
    """A JSON object from `file`, or ValueError naming the file and the line."""
    data = file.read_bytes()
    try:
        value = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise ValueError(
            f"{file}: line {line} is not UTF-8 (byte 0x{data[err.start]:02x}); save the file "
            "as UTF-8."
        ) from None
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{file}: line {err.lineno} is not valid JSON ({err.msg} at column {err.colno})."
        ) from None
    if not isinstance(value, dict):
        raise ValueError(f"{file} must hold a JSON object, not a {type(value).__name__}.")
    return value


def model_shape(name: str) -> ModelShape:
    """The shape of a built-in model (BUILTIN_MODELS) or of a local folder's config.json."""
    if name in BUILTIN_MODELS:
        return BUILTIN_MODELS[name]
    file = Path(name) / "config.json"
    if file.is_file():
        from transformers import AutoConfig

        family = _read_json(file).get("model_type")
        if family not in FAMILIES:
            raise ValueError(
                f"{file}: model_type {family!r} is not an architecture vppo plan knows "
                f"({', '.join(FAMILIES)})."
            )
        return _shape_from_config(AutoConfig.from_pretrained(file.parent), str(file))
    raise ValueError(
        f"model {name!r}: neither a built-in model ({', '.join(BUILTIN_MODELS)}) nor a "
        "folder with a config.json; pass --model PATH."
    )


def parameter_counts(m: ModelShape) -> dict[str, int]:
    """Parameters of the language model and the vision tower, as transformers builds them.

    Qwen2.5-VL: q/k/v projections with bias, RMSNorm everywhere, a gated (SwiGLU) vision MLP with
    biases, a bias-free patch convolution. Qwen3-VL: no q/k/v bias but q/k RMSNorms per head,
    LayerNorms (weight and bias) in the vision tower, a plain two-layer vision MLP, a patch
    convolution with bias, a learned position table and one extra merger per DeepStack layer.
    Qwen3.5: Qwen3-VL's attention with a gated output (q_proj 2 x wide) in the full-attention
    layers; each gated-delta-net layer has q/k/v, z, b and a projections, a depthwise causal
    convolution without bias, per-head dt bias and A, a gated RMSNorm over v_dim and an output
    projection; Qwen3-VL's vision tower without DeepStack.
    """
    h, kv = m.hidden_size, m.num_kv_heads * m.head_dim
    q = m.num_heads * m.head_dim
    qwen3 = m.family in _QWEN3_VISION
    gate = q if m.family == "qwen3_5" else 0  # attention output gate
    attention = (
        h * (q + gate)
        + 2 * h * kv
        + q * h
        + (0 if qwen3 else q + 2 * kv)
        + (2 * m.head_dim if qwen3 else 0)
    )
    dense = 3 * h * m.intermediate_size + 2 * h  # MLP and the two norms
    layer = attention + dense
    value = m.linear_num_value_heads * m.linear_value_head_dim
    linear_layer = (
        h * (m.linear_conv_dim + value + 2 * m.linear_num_value_heads)
        + m.linear_conv_dim * m.linear_conv_kernel
        + 2 * m.linear_num_value_heads
        + m.linear_value_head_dim
        + value * h
        + dense
    )
    embeddings = m.vocab_size * h * (1 if m.tie_word_embeddings else 2)
    language = m.full_attention_layers * layer + m.linear_layers * linear_layer + embeddings + h

    hv, iv = m.vision_hidden_size, m.vision_intermediate_size
    norm = 2 * hv if qwen3 else hv  # LayerNorm has a bias, RMSNorm not
    mlp = (2 * hv * iv + iv + hv) if qwen3 else (3 * hv * iv + 2 * iv + hv)
    block = 2 * norm + (3 * hv * hv + 3 * hv) + (hv * hv + hv) + mlp
    patch = m.in_channels * m.temporal_patch_size * m.patch_size**2 * hv + (hv if qwen3 else 0)
    merged = hv * m.spatial_merge_size**2
    merger_linears = (merged * merged + merged) + (
        merged * m.vision_out_hidden_size + m.vision_out_hidden_size
    )
    merger = norm + merger_linears
    deepstack = m.deepstack_layers * ((2 * merged if qwen3 else merged) + merger_linears)
    vision = patch + m.vision_position_embeddings * hv + m.vision_depth * block + merger + deepstack
    return {
        "language": language,
        "vision": vision,
        "total": language + vision,
        "layer": max(layer, linear_layer) if m.linear_layers else layer,
        "embedding": m.vocab_size * h,
    }


# ---------------------------------------------------------------------------------------------
# Sharding (from an accelerate config)
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sharding:
    """How model states are split over the GPUs, and what lives on the CPU."""

    name: str
    description: str
    shard_params: bool  # ZeRO-3 / FSDP full shard: parameters split over the GPUs
    shard_grads: bool  # ZeRO-2 and up / FSDP
    shard_optimizer: bool  # ZeRO-1 and up / FSDP
    offload_params: bool = False
    offload_optimizer: bool = False  # optimizer state (and, with it, the gradients) on the CPU
    deepspeed: bool = False  # HF Trainer casts float inputs (pixel_values) to bf16 under DeepSpeed


NO_SHARDING = Sharding(
    "none", "one process per GPU, no sharding (DDP or single GPU)", False, False, False
)


_FSDP_STRATEGIES = {
    "1": "FULL_SHARD",
    "2": "SHARD_GRAD_OP",
    "3": "NO_SHARD",
    "4": "HYBRID_SHARD",
    "5": "HYBRID_SHARD_ZERO2",
}


def _read_accelerate_yaml(path: Path) -> dict:
    """An accelerate config's YAML (safe_load) as a mapping, or ValueError naming the file and line."""
    config = (
        read_yaml_file(path, f"--accelerate-config {path}", "give an accelerate YAML config") or {}
    )
    if not isinstance(config, dict):
        raise ValueError(f"--accelerate-config {path} must be a mapping of field: value.")
    return config


def _config_int(path: Path, key: str, value) -> int:
    try:
        if isinstance(value, bool):
            raise ValueError
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"--accelerate-config {path}: {key} must be an integer, got {value!r}."
        ) from None


def read_sharding(name: str) -> Sharding:
    """Parse an accelerate config (a shipped name in recipes/accelerate, or a path)."""
    path = Path(name)
    if not path.is_file():
        path = ACCELERATE_DIR / f"{name.removesuffix('.yaml')}.yaml"
    if not path.is_file():
        shipped = ", ".join(sorted(p.stem for p in ACCELERATE_DIR.glob("*.yaml")))
        raise ValueError(f"--accelerate-config: no file {name!r}; shipped configs are {shipped}.")
    config = _read_accelerate_yaml(path)
    kind = str(config.get("distributed_type", "NO")).upper()
    label = path.stem
    if kind == "DEEPSPEED":
        ds = dict(config.get("deepspeed_config") or {})
        if ds.get("deepspeed_config_file"):  # a DeepSpeed JSON: read its zero_optimization block
            zero = _read_json(Path(ds["deepspeed_config_file"])).get("zero_optimization") or {}
            ds = {
                "zero_stage": zero.get("stage", 0),
                "offload_param_device": (zero.get("offload_param") or {}).get("device", "none"),
                "offload_optimizer_device": (zero.get("offload_optimizer") or {}).get(
                    "device", "none"
                ),
            }
        stage = _config_int(path, "zero_stage", ds.get("zero_stage", 0))
        offload_p = str(ds.get("offload_param_device", "none")).lower() not in ("none", "")
        offload_o = str(ds.get("offload_optimizer_device", "none")).lower() not in ("none", "")
        where = (
            f"offload: parameters {'cpu' if offload_p and stage == 3 else 'none'}, "
            f"optimizer {'cpu' if offload_o else 'none'}"
        )
        return Sharding(
            label,
            f"DeepSpeed ZeRO-{stage}; {where}",
            stage >= 3,
            stage >= 2,
            stage >= 1,
            offload_params=offload_p and stage == 3,
            offload_optimizer=offload_o,
            deepspeed=True,
        )
    if kind == "FSDP":
        fsdp = config.get("fsdp_config") or {}
        strategy = str(fsdp.get("fsdp_sharding_strategy", "FULL_SHARD")).upper()
        strategy = _FSDP_STRATEGIES.get(
            strategy, strategy
        )  # accelerate also writes them as numbers
        if _config_int(path, "fsdp_version", fsdp.get("fsdp_version", 1)) == 2:
            strategy = (
                "FULL_SHARD" if fsdp.get("fsdp_reshard_after_forward", True) else "SHARD_GRAD_OP"
            )
        full = strategy in ("FULL_SHARD", "HYBRID_SHARD")
        offload = bool(fsdp.get("fsdp_offload_params", False))
        shard = strategy != "NO_SHARD"
        return Sharding(
            label,
            f"FSDP{fsdp.get('fsdp_version', 1)} {strategy}; offload: "
            f"{'parameters, gradients and optimizer cpu' if offload else 'none'}",
            full,
            shard,
            shard,
            offload_params=offload,
            offload_optimizer=offload,
        )
    return Sharding(label, f"{kind}: {NO_SHARDING.description}", False, False, False)


# ---------------------------------------------------------------------------------------------
# The budget
# ---------------------------------------------------------------------------------------------
PHASES = ("generation", "merge", "scoring", "update")


@dataclass
class Line:
    """One component: what it is, its formula with the inputs filled in, its size and its phases."""

    name: str
    formula: str
    gb: float
    phases: tuple[str, ...]


@dataclass
class MemoryPlan:
    """The per-GPU budget: components, phase totals and the peak, for one recipe on one card."""

    recipe: str
    card_gb: float
    gpus: int
    nodes: int
    header: list[str]
    lines: list[Line]
    notes: list[str] = field(default_factory=list)

    def phase_gb(self, phase: str) -> float:
        return sum(line.gb for line in self.lines if phase in line.phases)

    @property
    def peak_phase(self) -> str:
        return max(PHASES, key=self.phase_gb)

    @property
    def peak_gb(self) -> float:
        return self.phase_gb(self.peak_phase)

    @property
    def fits(self) -> bool:
        return self.peak_gb <= self.card_gb


def _b(n: float) -> str:
    """A parameter count as '8.29e9'."""
    return f"{n / 1e9:.2f}e9"


def _needs_dependency(recipe: dict) -> bool:
    """VPPOConfig.needs_dependency on the raw recipe: whether VPPO scores dependency."""
    return bool(recipe["use_tas"]) or TOKEN_SELECTIONS[recipe["token_selection"]].needs_dependency


def _papo_reads_masked(recipe: dict) -> bool:
    """VPPOConfig.papo_reads_masked on the raw recipe: PAPO's KL or masked entropy is on."""
    return recipe["papo_coef"] > 0 or recipe["papo_masked_entropy_coef"] > 0


def _papo_masked_grad(recipe: dict) -> bool:
    """Whether the update runs PAPO's masked forward with gradient (`papo_masked_grad`)."""
    return bool(recipe["papo_masked_grad"]) and _papo_reads_masked(recipe)


def _needs_perturbed_pass(recipe: dict) -> bool:
    """VPPOConfig.needs_perturbed_pass on the raw recipe: whether the no-grad perturbed forward
    runs (VPPO's dependency, θ_old's masked-image log-probs for PAPO; one pass serves both)."""
    return _needs_dependency(recipe) or (
        _papo_reads_masked(recipe) and not _papo_masked_grad(recipe)
    )


def _layer_elements(hidden: int, qkv_width: int, intermediate: int, gated: bool) -> int:
    """Activations one transformer layer holds per token while it is recomputed for backward.

    Two norm outputs (2h), the q/k/v projections (qkv_width), the attention output and the output
    projection (2h), and the MLP's intermediates: gate, up, activation and product for a gated
    MLP (4I), first linear and activation for a plain one (2I). Flash attention keeps no s x s matrix.
    """
    return 4 * hidden + qkv_width + (4 if gated else 2) * intermediate


_INTEGER_FIELDS = (
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "steps_per_generation",
    "max_completion_length",
    "max_pixels",
    "vllm_tensor_parallel_size",
    "kl_chunk_size",
    "save_total_limit",
)
_NUMBER_FIELDS = ("vllm_gpu_memory_utilization",)
_BOOLEAN_FIELDS = (
    "use_vllm",
    "vllm_enable_sleep_mode",
    "gradient_checkpointing",
    "bf16",
    "use_tas",
    "dynamic_sampling",
)
_BOOLEAN_WORDS = {
    "true": True,
    "yes": True,
    "y": True,
    "t": True,
    "1": True,
    "false": False,
    "no": False,
    "n": False,
    "f": False,
    "0": False,
}  # as transformers reads flags


def _typed(recipe: dict) -> dict:
    """`recipe` with the fields the plan computes with as numbers, or ValueError naming the field."""
    out = dict(recipe)
    for key, kind in [(k, int) for k in _INTEGER_FIELDS] + [(k, float) for k in _NUMBER_FIELDS]:
        value = out.get(key)
        if value is None:
            continue
        try:
            number = kind(value)
            if isinstance(value, bool) or (kind is int and float(value) != number):
                raise ValueError
        except (TypeError, ValueError):
            wanted = "an integer" if kind is int else "a number"
            raise ValueError(f"{key} must be {wanted}, got {value!r}.") from None
        if kind is int and key != "save_total_limit" and number < 1:
            raise ValueError(f"{key} must be a positive integer, got {value!r}.")
        if kind is float and not 0 < number <= 1:
            raise ValueError(f"{key} must be a fraction in (0, 1], got {value!r}.")
        out[key] = number
    for key in _BOOLEAN_FIELDS:
        value = out.get(key)
        if isinstance(value, str | int) and str(value).strip().lower() in _BOOLEAN_WORDS:
            value = out[key] = _BOOLEAN_WORDS[str(value).strip().lower()]
        if value is not None and not isinstance(value, bool):
            raise ValueError(f"{key} must be true or false, got {value!r}.")
    return out


def recipe_max_pixels(recipe: dict, model: str | None = None) -> int:
    """The `max_pixels` `vppo train` resizes images to for `recipe` (and `model`, its
    model_name_or_path unless given): the recipe's, else the model folder's recorded value
    (vppo_prompt.json), else vppo's default. The same resolution as `vppo train`'s."""
    from vppo.data.settings import resolve_prompt_settings

    model = recipe.get("model_name_or_path") if model is None else model
    given = _typed({"max_pixels": recipe.get("max_pixels")})["max_pixels"]
    resolved = resolve_prompt_settings(model, max_pixels=given).max_pixels
    if resolved is None:
        raise ValueError(
            "max_pixels is null (no upper bound): vppo plan needs an image size to plan for; "
            "set max_pixels in the recipe."
        )
    return int(resolved)


def build_plan(
    recipe: dict,
    m: ModelShape,
    sharding: Sharding,
    gpus: int,
    card_gb: float,
    nodes: int = 1,
    name: str = "recipe",
) -> MemoryPlan:
    """The per-GPU memory budget of `recipe` (a merged recipe dict) for model `m` on `gpus` cards
    of `card_gb` total memory. A recipe without `max_pixels` is planned at vppo's default."""
    r = _typed({**RECIPE_DEFAULTS, **recipe})
    counts = parameter_counts(m)
    n = counts["total"]
    b = int(r["per_device_train_batch_size"])
    ga = int(r["gradient_accumulation_steps"])
    spg = int(r["steps_per_generation"] or ga)
    completion = int(r["max_completion_length"])
    max_pixels = int(r.get("max_pixels") or DEFAULT_MAX_PIXELS)
    patch_px = m.patch_size * m.spatial_merge_size
    patches = max_pixels // m.patch_size**2  # ViT patches of one image at max_pixels
    image_tokens = max_pixels // patch_px**2  # after the 2 x 2 merge
    text_tokens = PROMPT_TEXT_TOKENS
    seq = image_tokens + text_tokens + completion
    mixed = bool(r["bf16"])
    p_bytes, g_bytes, o_bytes = (
        (2, 2, 12) if mixed else (4, 4, 8)
    )  # fp32 master + 2 moments if mixed
    act_bytes = 2 if mixed else 4
    rows = b * spg  # generation batch per GPU
    h, kv_width = m.hidden_size, m.num_kv_heads * m.head_dim
    colocate = bool(r["use_vllm"]) and r["vllm_mode"] == "colocate"
    sleep = colocate and bool(r["vllm_enable_sleep_mode"])
    refills = bool(r["dynamic_sampling"])
    tp = int(r["vllm_tensor_parallel_size"])
    all_phases = PHASES
    after_generation = ("merge", "scoring", "update")
    lines: list[Line] = []

    def states(label: str, nbytes: int, sharded: bool, offloaded: bool, what: str) -> None:
        if offloaded:
            lines.append(Line(label, f"{what}: offloaded to CPU", 0.0, all_phases))
            return
        share = gpus if sharded else 1
        lines.append(
            Line(
                label,
                f"{_b(n)} x {nbytes} B / {share} GPU{'s' if share > 1 else ''}",
                n * nbytes / share / GB,
                all_phases,
            )
        )

    states(
        "parameters",
        p_bytes,
        sharding.shard_params,
        sharding.offload_params,
        "bf16 weights" if mixed else "fp32",
    )
    states(
        "gradients", g_bytes, sharding.shard_grads, sharding.offload_optimizer, "with the optimizer"
    )
    states(
        "optimizer (AdamW)",
        o_bytes,
        sharding.shard_optimizer,
        sharding.offload_optimizer,
        "fp32 master + 2 moments" if mixed else "2 moments",
    )
    if sharding.shard_params or sharding.offload_params:
        unit = max(counts["layer"], counts["embedding"])
        lines.append(
            Line(
                "gathered modules",
                f"{GATHERED_MODULES} x max(layer {_b(counts['layer'])}, "
                f"embedding {_b(counts['embedding'])}) x {p_bytes} B",
                GATHERED_MODULES * unit * p_bytes / GB,
                all_phases,
            )
        )

    if colocate:
        util = float(r["vllm_gpu_memory_utilization"])
        lines.append(
            Line(
                "vLLM engine (generating)",
                f"{util} x {card_gb:g} GB total (weights/TP + KV cache)",
                util * card_gb,
                ("generation",),
            )
        )
        if sleep:
            lines.append(
                Line(
                    "vLLM asleep (level 2)",
                    "CUDA-graph pool and buffers (assumed)",
                    VLLM_SLEEP_RESIDUAL_GB,
                    after_generation,
                )
            )
        else:
            lines.append(
                Line(
                    "vLLM engine (awake)",
                    f"{util} x {card_gb:g} GB, no sleep mode",
                    util * card_gb,
                    after_generation,
                )
            )
    elif not r["use_vllm"]:
        full = m.full_attention_layers
        kv = rows * seq * 2 * full * kv_width * act_bytes
        lines.append(
            Line(
                "KV cache (transformers generate)",
                f"{rows} rows x {seq} tok x 2 x {full} x {kv_width} x {act_bytes} B",
                kv / GB,
                ("generation",),
            )
        )
        if m.linear_layers:
            # transformers keeps the convolution's last `kernel` inputs in the activation dtype.
            state = m.recurrent_state_bytes(m.linear_conv_kernel, act_bytes)
            lines.append(
                Line(
                    "recurrent state (transformers generate)",
                    f"{rows} rows x {m.linear_layers} linear layers x ({m.linear_conv_dim} x "
                    f"{m.linear_conv_kernel} x {act_bytes} B conv + {m.linear_num_value_heads} x "
                    f"{m.linear_key_head_dim} x {m.linear_value_head_dim} x "
                    f"{RECURRENT_STATE_BYTES} B delta rule)",
                    rows * state / GB,
                    ("generation",),
                )
            )

    # pixel_values: float32 as the processor makes them; HF Trainer casts inputs to bf16 under DeepSpeed.
    pixel_width = m.in_channels * m.temporal_patch_size * m.patch_size**2
    pixel_bytes = 2 if (sharding.deepspeed and mixed) else 4
    pixels = rows * patches * pixel_width * pixel_bytes / GB
    lines.append(
        Line(
            "pixel_values (the rollout)",
            f"{b} x {spg} rows x {patches} patches x {pixel_width} x {pixel_bytes} B",
            pixels,
            all_phases,
        )
    )
    if refills:
        # Kept rounds are pruned to at most one batch of rows; the round being generated is whole;
        # merging them builds the batch once more before the rounds are released.
        lines.append(
            Line(
                "refill round (dynamic sampling)",
                "one more rollout's pixel_values",
                pixels,
                ("generation", "merge"),
            )
        )
        lines.append(
            Line(
                "merged batch (dynamic sampling)",
                "one more rollout's pixel_values",
                pixels,
                ("merge",),
            )
        )
    if _papo_masked_grad(r):
        # Drawn once per rollout and cut into the update micro-batches with the real ones.
        lines.append(
            Line(
                "perturbed pixel_values",
                "same as the rollout's, kept for the update",
                pixels,
                ("scoring", "update"),
            )
        )
    elif _needs_perturbed_pass(r):
        lines.append(
            Line(
                "perturbed pixel_values",
                "same as the rollout's",
                pixels,
                ("scoring",),
            )
        )

    # No-grad scoring forwards (old and perturbed-image log-probs), chunks of b rows: one layer's
    # activations at a time, and the fused head's tile over the completion's positions.
    gate = m.num_heads * m.head_dim if m.family == "qwen3_5" else 0  # gated attention output
    layer_text = _layer_elements(
        h, m.num_heads * m.head_dim + gate + 2 * kv_width, m.intermediate_size, gated=True
    )
    if m.linear_layers:
        # A gated delta net: its q/k/v before and after the convolution, z, and the core output.
        value = m.linear_num_value_heads * m.linear_value_head_dim
        layer_text = max(
            layer_text,
            _layer_elements(h, 2 * m.linear_conv_dim + 2 * value, m.intermediate_size, gated=True),
        )
    layer_vision = _layer_elements(
        m.vision_hidden_size,
        3 * m.vision_hidden_size,
        m.vision_intermediate_size,
        gated=m.family not in _QWEN3_VISION,
    )
    scored = b * completion  # completion positions the head scores per chunk
    tile_tokens = min(scored, HEAD_TILE_TOKENS)
    tile = tile_tokens * HEAD_TILE_VOCAB * act_bytes
    lines.append(
        Line(
            "scoring forward (one layer)",
            f"{b} x ({seq} tok x {layer_text} + {patches} patches x "
            f"{layer_vision}) x {act_bytes} B",
            b * (seq * layer_text + patches * layer_vision) * act_bytes / GB,
            ("scoring",),
        )
    )
    lines.append(
        Line(
            "fused LM head (no grad)",
            f"{tile_tokens} x {HEAD_TILE_VOCAB} x {act_bytes} B tile + "
            f"{scored} tok x {h} x {act_bytes} B",
            (tile + scored * h * act_bytes) / GB,
            ("scoring",),
        )
    )
    if _needs_dependency(r) and r["dependency_estimator"] in DISTRIBUTION_ESTIMATORS:
        chunk = int(r["kl_chunk_size"])
        exact = 2 * rows * completion * h * act_bytes + 4 * chunk * m.vocab_size * 4
        lines.append(
            Line(
                "exact-KL hidden states + chunk",
                f"2 x {rows} x {completion} x {h} x {act_bytes} B"
                f" + 4 x {chunk} x {m.vocab_size} x 4 B",
                exact / GB,
                ("scoring",),
            )
        )

    # Update: forward/backward with gradient checkpointing at micro-batch b.
    if r["gradient_checkpointing"]:
        lines.append(
            Line(
                "text checkpoints",
                f"{m.num_layers} layers x {b} x {seq} tok x {h} x {act_bytes} B",
                m.num_layers * b * seq * h * act_bytes / GB,
                ("update",),
            )
        )
        lines.append(
            Line(
                "vision checkpoints",
                f"{m.vision_depth} blocks x {b} x {patches} patches x "
                f"{m.vision_hidden_size} x {act_bytes} B",
                m.vision_depth * b * patches * m.vision_hidden_size * act_bytes / GB,
                ("update",),
            )
        )
        text_layers, vision_layers = 1, 1
    else:
        text_layers, vision_layers = m.num_layers, m.vision_depth
    lines.append(
        Line(
            "text layer recompute",
            f"{text_layers} x {b} x {seq} tok x {layer_text} x {act_bytes} B x 2 (fwd + grad)",
            text_layers * b * seq * layer_text * act_bytes * 2 / GB,
            ("update",),
        )
    )
    lines.append(
        Line(
            "vision block recompute",
            f"{vision_layers} x {b} x {patches} patches x {layer_vision} x {act_bytes} B x 2",
            vision_layers * b * patches * layer_vision * act_bytes * 2 / GB,
            ("update",),
        )
    )
    head_grads = scored * h * (4 + act_bytes) + m.vocab_size * h * (4 + p_bytes)
    lines.append(
        Line(
            "fused LM head + its grads",
            f"tile + {scored} tok x {h} x {4 + act_bytes} B + "
            f"{m.vocab_size} x {h} x {4 + p_bytes} B (fp32 grads)",
            (tile + head_grads) / GB,
            ("update",),
        )
    )
    if _papo_masked_grad(r):
        # The masked forward's graph is alive beside the loss pass's until their one backward; the
        # recompute and head tiles run one at a time, so only what each pass keeps doubles.
        kept = scored * h * (4 + act_bytes)
        if r["gradient_checkpointing"]:
            kept += (
                m.num_layers * b * seq * h + m.vision_depth * b * patches * m.vision_hidden_size
            ) * act_bytes
            what = "text + vision checkpoints as above"
        else:
            kept += (
                m.num_layers * b * seq * layer_text + m.vision_depth * b * patches * layer_vision
            ) * act_bytes
            what = "every layer's activations as above"
        lines.append(
            Line(
                "masked pass with grad (PAPO)",
                f"{what} + {scored} tok x {h} x {4 + act_bytes} B",
                kept / GB,
                ("update",),
            )
        )
    lines.append(
        Line(
            "CUDA / NCCL overhead",
            "context, communicators, buckets (fixed)",
            CUDA_OVERHEAD_GB,
            all_phases,
        )
    )

    per_node = gpus // nodes
    header = [
        f"model     {m.source or 'model'}: {n / 1e9:.2f} B parameters = {counts['language'] / 1e9:.2f} B language"
        f" + {counts['vision'] / 1e9:.2f} B vision",
        f"sharding  {sharding.name}: {sharding.description}; over {gpus} GPUs ({nodes} node"
        f"{'s' if nodes > 1 else ''} x {per_node})",
        f"sequence  {seq:,} tokens = {image_tokens:,} image ({max_pixels:,} px / {patch_px}^2) + "
        f"{text_tokens} text + {completion:,} completion; micro-batch {b}",
        f"rollout   {rows * gpus:,} responses = {b} x {spg} steps_per_generation x {gpus} GPUs; "
        f"{spg / ga:g} updates of {b * ga * gpus:,} ({b} x {ga} accumulation x {gpus})"
        + ("; dynamic sampling refills" if refills else ""),
    ]
    # A checkpoint holds the weights as saved (parameters' dtype) and the optimizer state (fp32 master
    # weights and Adam's two moments when mixed), summed over all shards; save_total_limit of them are kept.
    checkpoint_gb = n * (p_bytes + o_bytes) / GB
    keep = r.get("save_total_limit")
    header.append(
        f"saves     checkpoints of {checkpoint_gb:,.0f} GB = {_b(n)} x ({p_bytes} B weights + {o_bytes} B "
        f"optimizer)"
        + (
            f"; {int(keep)} kept = {int(keep) * checkpoint_gb:,.0f} GB of disk"
            if keep
            else "; every one kept (no save_total_limit)"
        )
    )
    notes = []
    if colocate:
        weights = n * 2 / tp / GB
        kv_gb = float(r["vllm_gpu_memory_utilization"]) * card_gb - weights
        per_token = 2 * m.full_attention_layers * kv_width * 2 / tp
        cache = (
            f"vLLM      colocate, TP {tp}, sleep mode {'on' if sleep else 'off'}: KV cache "
            f"{kv_gb:.1f} GB"
        )
        if m.linear_layers:
            # vLLM's hybrid cache is one pool: a running sequence holds KV for its tokens in the
            # full-attention layers and one recurrent state per gated-delta-net layer (the
            # convolution's last kernel - 1 inputs in bf16, the delta-rule state in float32),
            # both split over TP.
            state = m.recurrent_state_bytes(m.linear_conv_kernel - 1, 2) / tp
            per_sequence = seq * per_token + state
            header.append(
                f"{cache} (KV of {m.full_attention_layers} full-attention layers and recurrent "
                f"state of {m.linear_layers} linear-attention layers) = "
                f"{max(kv_gb, 0) * GB / per_sequence:,.0f} sequences of {seq:,} tokens at once "
                f"({seq * per_token / 1e6:,.0f} MB KV + {state / 1e6:,.0f} MB state each) after "
                f"{weights:.1f} GB of weights"
            )
        else:
            header.append(
                f"{cache} = {max(kv_gb, 0) * GB / per_token / 1e3:,.0f}k tokens after "
                f"{weights:.1f} GB of weights"
            )
        if kv_gb <= 0:
            notes.append(
                "vLLM's share does not even hold its weights: raise vllm_gpu_memory_utilization."
            )
        if tp > per_node or per_node % tp:
            notes.append(
                f"vllm_tensor_parallel_size {tp} must divide the {per_node} GPUs of a node."
            )
    host = 0.0
    if sharding.offload_params:
        host += n * p_bytes / nodes
    if sharding.offload_optimizer:
        host += n * (g_bytes + o_bytes) / nodes
    if host:
        notes.append(f"host memory for offloaded states: {host / GB:.0f} GB per node (pinned).")
    return MemoryPlan(name, card_gb, gpus, nodes, header, lines, notes)


def format_plan(plan: MemoryPlan) -> str:
    """The budget as a table; the last line is `peak per GPU: X GB of Y GB`."""
    width = max(len(line.formula) for line in plan.lines)
    out = [
        f"vppo plan: {plan.recipe} on {plan.gpus} x {plan.card_gb:g} GB GPUs",
        *plan.header,
        "",
        f"{'component':<32} {'arithmetic':<{width}} {'GB':>7}  phases (g m s u)",
    ]
    for line in plan.lines:
        marks = " ".join("x" if p in line.phases else "." for p in PHASES)
        out.append(f"{line.name:<32} {line.formula:<{width}} {line.gb:>7.2f}  {marks}")
    out.append("")
    out.append(
        "phases: "
        + ", ".join(f"{p} {plan.phase_gb(p):.1f} GB" for p in PHASES)
        + f" (g = generation, m = merge, s = scoring, u = update; peak: {plan.peak_phase})"
    )
    out += [f"note: {note}" for note in plan.notes]
    if not plan.fits:
        out.append(
            f"does NOT fit: {plan.peak_gb - plan.card_gb:.1f} GB over the card in the {plan.peak_phase} phase."
        )
    out.append(f"peak per GPU: {plan.peak_gb:.1f} GB of {plan.card_gb:g} GB")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="vppo plan",
        description="Per-GPU memory budget of a recipe, with "
        "the arithmetic shown. Exit status 0: fits; 1: does not fit; 2: bad input.",
    )
    p.add_argument(
        "--config", required=True, help="recipe name (e.g. qwen2_5_vl_7b_vppo) or YAML path"
    )
    p.add_argument(
        "--gpus", type=int, required=True, help="GPUs in total (the sharding world size)"
    )
    p.add_argument(
        "--nodes", type=int, default=1, help="nodes the GPUs are spread over (default 1)"
    )
    p.add_argument(
        "--gpu-memory-gb",
        type=float,
        default=CARD_GB,
        help="total memory of one card in 10^9 bytes, "
        f"as CUDA reports it (default {CARD_GB:g}: an 80 GB H100 or A100; an H200 reports 150)",
    )
    p.add_argument(
        "--accelerate-config",
        "--accelerate_config",
        help="accelerate config: a shipped name or a path "
        "(default: zero3_<gpus>gpu, as the README launches; none for 1 GPU)",
    )
    p.add_argument(
        "--model",
        help="model to plan for instead of the recipe's: a built-in name or a "
        "folder with config.json",
    )
    return p


def _default_sharding(gpus: int) -> Sharding:
    if gpus == 1:
        return NO_SHARDING
    if not (ACCELERATE_DIR / f"zero3_{gpus}gpu.yaml").is_file():
        raise ValueError(
            f"no shipped accelerate config zero3_{gpus}gpu; pass --accelerate-config NAME|PATH."
        )
    return read_sharding(f"zero3_{gpus}gpu")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.gpus <= 0:
            raise ValueError(f"--gpus must be a positive number of GPUs, got {args.gpus}.")
        if args.nodes <= 0 or args.gpus % args.nodes:
            raise ValueError(
                f"--nodes must be positive and divide --gpus ({args.gpus}), got {args.nodes}."
            )
        if not args.gpu_memory_gb > 0 or not math.isfinite(args.gpu_memory_gb):
            raise ValueError(
                f"--gpu-memory-gb must be a positive number, got {args.gpu_memory_gb}."
            )
        recipe = load_recipe(args.config)
        shape = model_shape(args.model or str(recipe.get("model_name_or_path", "")))
        recipe = {**recipe, "max_pixels": recipe_max_pixels(recipe, args.model)}
        sharding = (
            read_sharding(args.accelerate_config)
            if args.accelerate_config
            else _default_sharding(args.gpus)
        )
        plan = build_plan(
            recipe,
            shape,
            sharding,
            args.gpus,
            args.gpu_memory_gb,
            args.nodes,
            name=Path(args.config).stem if Path(args.config).suffix else args.config,
        )
    except (ValueError, OSError, yaml.YAMLError) as err:
        print(f"vppo plan: {err}", file=sys.stderr)
        return 2
    print(format_plan(plan))
    return 0 if plan.fits else 1
