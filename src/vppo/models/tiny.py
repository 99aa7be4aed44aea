"""Offline builders for tiny, randomly initialised, *real* vision-language architectures.

`build_tiny_vlm` returns a genuine ``Qwen2_5_VLForConditionalGeneration``,
``Qwen3VLForConditionalGeneration``, ``Qwen3_5ForConditionalGeneration`` (gated-delta-net
linear-attention layers mixed with full-attention ones) or ``SmolVLMForConditionalGeneration``
(Idefics3 family) with
a few hundred thousand parameters, plus a working processor: a byte-level BPE tokenizer trained
in-process on a small corpus, the architecture's special tokens (their ids written into the model
config), a chat template for TRL's conversational format, left padding and the architecture's own
image processor. Nothing touches the network, and a build takes a few seconds on CPU.

These models let the whole training stack (TRL generation, re-scoring, image perturbation, VPPO
shaping) run in tests and demos exactly as it would on a 7B checkpoint, only smaller. Decoder
attention heads are 32 wide so that vLLM (whose CPU attention has no 16-wide kernel) can serve
them too.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import transformers
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerFast, ProcessorMixin

from vppo.models.processors import make_processor

__all__ = ["DEFAULT_CORPUS", "build_tiny_vlm", "supported_architectures", "train_bpe_tokenizer"]

# OpenAI CLIP statistics (Qwen2/2.5-VL) and the symmetric 0.5 statistics (Qwen3-VL, SmolVLM).
_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_HALF = (0.5, 0.5, 0.5)

# Qwen chat format. Image parts become <|vision_start|><|image_pad|><|vision_end|>; the processor
# expands the single <|image_pad|> into one token per merged 2x2 patch block.
QWEN_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}"
    "{{- message['content'] -}}"
    "{%- else -%}"
    "{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}"
    "{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
    "{%- elif part['type'] == 'video' -%}"
    "{{- '<|vision_start|><|video_pad|><|vision_end|>' -}}"
    "{%- elif part['type'] == 'text' -%}"
    "{{- part['text'] -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- endif -%}"
)

# SmolVLM chat format: "<|im_start|>User:<image>question<end_of_utterance>\nAssistant:". The
# processor expands each <image> into <fake_token_around_image><global-img><image>*n<fake...>.
SMOLVLM_CHAT_TEMPLATE = (
    "{{- '<|im_start|>' -}}"
    "{%- for message in messages -%}"
    "{{- message['role'] | capitalize -}}"
    "{%- if message['content'] is string -%}"
    "{{- ': ' + message['content'] -}}"
    "{%- else -%}"
    "{%- if message['content'] and message['content'][0]['type'] == 'image' -%}"
    "{{- ':' -}}"
    "{%- else -%}"
    "{{- ': ' -}}"
    "{%- endif -%}"
    "{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}"
    "{{- '<image>' -}}"
    "{%- elif part['type'] == 'text' -%}"
    "{{- part['text'] -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{{- '<end_of_utterance>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- 'Assistant:' -}}"
    "{%- endif -%}"
)

# A small built-in corpus: chat roles, reasoning markup, digits and the vocabulary of simple
# visual maths questions, so that the BPE merges resemble what the tiny model will see.
DEFAULT_CORPUS: tuple[str, ...] = (
    "system\nuser\nassistant\nUser:Assistant:",
    "user\nassistant\nsystem\nUser: Assistant:",
    "system user assistant User: Assistant: You are a helpful assistant.",
    "<think> Let me look at the image carefully. </think> The answer is \\boxed{4}.",
    "<think> I count the shapes one by one. </think> \\boxed{7}",
    "<think> First, read the numbers in the picture. Then add them. </think> \\boxed{12}",
    "Look at the image and answer the question. Put the final answer in \\boxed{}.",
    "How many red squares are in the image? How many blue circles are there?",
    "What is the colour of the largest shape? Which shape is on the left?",
    "What number is written in the top left corner of the picture?",
    "red green blue yellow black white grey orange purple colour color",
    "square circle triangle rectangle shape shapes object objects grid cell cells",
    "left right top bottom above below next to between inside outside corner centre center",
    "count number numbers sum total difference product quotient ratio percent",
    "add plus minus times divided by equals is equal to greater less than",
    "0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 25 30 42 50 64 99 100",
    "one two three four five six seven eight nine ten zero",
    "angle triangle area perimeter length width height radius diameter degrees",
    "The triangle has angles of 30, 60 and 90 degrees. Find the area of the circle.",
    "x + y = 10, 2x - y = 5, so x = 5 and y = 5. The answer is \\boxed{5}.",
    "\\frac{1}{2} \\sqrt{2} \\pi \\times \\cdot \\leq \\geq ^2 _1 ( ) [ ] { } = + - * /",
    "Step 1: identify the objects. Step 2: compute the result. Therefore the answer is",
    "A. B. C. D. (A) (B) (C) (D) Choose the correct option. Answer: A",
    "the a an of in on at to for with and or not yes no true false",
    "there are there is we can see the image shows so the total is",
    "Question: Answer: Solution: Hint: Please reason step by step.",
)

_QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
# Row/column markers are only emitted when SmolVLM splits an image into tiles; they are in the
# vocabulary (as in the released tokenizers) so that turning splitting on needs no new tokens.
_SMOLVLM_GRID = 4
_SMOLVLM_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<end_of_utterance>",
    "<fake_token_around_image>",
    "<global-img>",
    "<image>",
    *(
        f"<row_{r}_col_{c}>"
        for r in range(1, _SMOLVLM_GRID + 1)
        for c in range(1, _SMOLVLM_GRID + 1)
    ),
)
# Reasoning markers are ordinary (non-special) added tokens, as in Qwen3: decoding with
# skip_special_tokens keeps them, and a format reward sees them intact.
_REASONING_TOKENS = ("<think>", "</think>")


@dataclass(frozen=True)
class _ArchSpec:
    """Everything `build_tiny_vlm` needs to know about one architecture.

    Tokenizer:
        special_tokens: never split; ids are assigned first, in this order.
        bos_token, eos_token, pad_token, chat_template: the tokenizer's roles and template. The
            model config's eos/pad ids are ``eos_token``/``pad_token`` as well.
    Model:
        family: ``"qwen"`` (Qwen2.5/3-VL: flat patch rows, M-RoPE decoder) or ``"idefics3"``
            (SmolVLM: square images, pixel shuffle, Llama decoder); picks the config layout.
        model_class, config_class, image_processor_class: transformers class names.
        model_bos_token: bos of the model and generation configs (Qwen's differs from the
            tokenizer's, which has none).
        stop_tokens: the generation config's eos ids, in this order.
        config_token_ids: (top-level config field, token) pairs, e.g. the image token's id.
    Vision geometry:
        patch_size: ViT patch side in pixels.
        merge_size: Qwen spatial merge per side / SmolVLM pixel-shuffle ``scale_factor``.
        temporal_patch_size: frames per patch (Qwen; 1 for SmolVLM).
        image_mean, image_std: the image processor's normalisation.
    Qwen only (None/False elsewhere):
        rope_theta, mrope_interleaved: decoder rotary base and M-RoPE layout.
        text_head_dim_field: the text config has a ``head_dim`` field (Qwen3-VL; Qwen2.5-VL
            derives it from hidden size and heads).
        window_size: windowed vision attention with the last block global (Qwen2.5-VL).
        num_position_embeddings: learned vision position embeddings (Qwen3-VL).
        deepstack_visual_indexes: vision blocks whose features are also fed to the decoder.
        partial_rotary_factor: fraction of each full-attention head that is rotated (Qwen3.5:
            0.25); the M-RoPE sections split that fraction's frequencies. None: the whole head.
        full_attention_interval: Qwen3.5's hybrid decoder: every ``full_attention_interval``-th
            layer is full attention, the others gated-delta-net linear attention (written out
            as the config's ``layer_types``). None: every layer is full attention.
    """

    special_tokens: tuple[str, ...]
    bos_token: str | None
    eos_token: str
    pad_token: str
    chat_template: str
    family: str
    model_class: str
    config_class: str
    image_processor_class: str
    model_bos_token: str
    stop_tokens: tuple[str, ...]
    config_token_ids: tuple[tuple[str, str], ...]
    patch_size: int
    merge_size: int
    temporal_patch_size: int
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]
    rope_theta: float | None = None
    mrope_interleaved: bool = False
    text_head_dim_field: bool = False
    window_size: int | None = None
    num_position_embeddings: int | None = None
    deepstack_visual_indexes: tuple[int, ...] | None = None
    partial_rotary_factor: float | None = None
    full_attention_interval: int | None = None


_QWEN_CONFIG_TOKEN_IDS = (
    ("image_token_id", "<|image_pad|>"),
    ("video_token_id", "<|video_pad|>"),
    ("vision_start_token_id", "<|vision_start|>"),
    ("vision_end_token_id", "<|vision_end|>"),
)

_QWEN3_VL = _ArchSpec(
    special_tokens=_QWEN_SPECIAL_TOKENS,
    bos_token=None,
    eos_token="<|im_end|>",
    pad_token="<|endoftext|>",
    chat_template=QWEN_CHAT_TEMPLATE,
    family="qwen",
    model_class="Qwen3VLForConditionalGeneration",
    config_class="Qwen3VLConfig",
    image_processor_class="Qwen2VLImageProcessor",
    model_bos_token="<|endoftext|>",
    stop_tokens=("<|im_end|>", "<|endoftext|>"),
    config_token_ids=_QWEN_CONFIG_TOKEN_IDS,
    patch_size=16,
    merge_size=2,
    temporal_patch_size=2,
    image_mean=_HALF,
    image_std=_HALF,
    rope_theta=5_000_000.0,
    mrope_interleaved=True,
    text_head_dim_field=True,
    # For an 8x8 patch grid (128 px), interpolated for other sizes.
    num_position_embeddings=64,
    # DeepStack: features of the first vision block are also injected into the decoder.
    deepstack_visual_indexes=(0,),
)

_ARCH_SPECS: dict[str, _ArchSpec] = {
    "qwen2_5_vl": _ArchSpec(
        special_tokens=_QWEN_SPECIAL_TOKENS,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=QWEN_CHAT_TEMPLATE,
        family="qwen",
        model_class="Qwen2_5_VLForConditionalGeneration",
        config_class="Qwen2_5_VLConfig",
        image_processor_class="Qwen2VLImageProcessor",
        model_bos_token="<|endoftext|>",
        stop_tokens=("<|im_end|>", "<|endoftext|>"),
        config_token_ids=_QWEN_CONFIG_TOKEN_IDS,
        patch_size=14,
        merge_size=2,
        temporal_patch_size=2,
        image_mean=_CLIP_MEAN,
        image_std=_CLIP_STD,
        rope_theta=1_000_000.0,
        window_size=112,
    ),
    "qwen3_vl": _QWEN3_VL,
    # Qwen3.5: Qwen3-VL's tokenizer, processor and vision geometry, without DeepStack, with its own
    # model classes, RoPE and hybrid decoder.
    "qwen3_5": replace(
        _QWEN3_VL,
        model_class="Qwen3_5ForConditionalGeneration",
        config_class="Qwen3_5Config",
        rope_theta=10_000_000.0,
        deepstack_visual_indexes=None,
        partial_rotary_factor=0.25,
        # The released models alternate 3 linear-attention layers and 1 full-attention layer;
        # 1:1 here, so that the default 2-layer decoder has one layer of each kind.
        full_attention_interval=2,
    ),
    "smolvlm": _ArchSpec(
        special_tokens=_SMOLVLM_SPECIAL_TOKENS,
        bos_token="<|im_start|>",
        eos_token="<end_of_utterance>",
        pad_token="<|im_end|>",
        chat_template=SMOLVLM_CHAT_TEMPLATE,
        family="idefics3",
        model_class="SmolVLMForConditionalGeneration",
        config_class="SmolVLMConfig",
        image_processor_class="SmolVLMImageProcessor",
        model_bos_token="<|im_start|>",
        stop_tokens=("<end_of_utterance>",),
        config_token_ids=(("image_token_id", "<image>"),),
        patch_size=16,
        merge_size=2,
        temporal_patch_size=1,
        image_mean=_HALF,
        image_std=_HALF,
    ),
}


def supported_architectures() -> list[str]:
    """Names accepted by `build_tiny_vlm`, in a stable order."""
    return list(_ARCH_SPECS)


def train_bpe_tokenizer(
    texts: Iterable[str],
    vocab_size: int,
    special_tokens: Iterable[str],
    *,
    bos_token: str | None,
    eos_token: str,
    pad_token: str,
    chat_template: str,
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer in-process and wrap it for transformers.

    Digits are split one per token (as Qwen does), so numeric answers tokenize uniformly. Training
    is deterministic for a given corpus and vocabulary size. The tokenizer adds no special tokens
    on its own (the chat template writes them) and pads on the left.

    Args:
        texts: training corpus; at least one non-empty string.
        vocab_size: upper bound on the vocabulary, including the 256 byte symbols and the special
            tokens; the trained vocabulary can be smaller when the corpus runs out of merges.
        special_tokens: tokens that are never split; ids are assigned first, in this order.
        bos_token, eos_token, pad_token: roles of some of `special_tokens` (bos may be None).
        chat_template: Jinja chat template stored on the tokenizer.

    Returns:
        A ``PreTrainedTokenizerFast`` with ``padding_side == "left"``.
    """
    corpus = [t for t in texts if isinstance(t, str) and t.strip()]
    if not corpus:
        raise ValueError("vocab_texts must contain at least one non-empty string.")
    specials = list(dict.fromkeys(special_tokens))
    min_size = 256 + len(specials) + len(_REASONING_TOKENS)
    if vocab_size < min_size:
        raise ValueError(
            f"vocab_size must be at least {min_size} (256 bytes plus the special tokens), "
            f"got {vocab_size}."
        )
    for role, token in (
        ("bos_token", bos_token),
        ("eos_token", eos_token),
        ("pad_token", pad_token),
    ):
        if token is not None and token not in specials:
            raise ValueError(f"{role} {token!r} is not one of the special tokens.")

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(_REASONING_TOKENS),
        min_frequency=1,
        special_tokens=[AddedToken(t, special=True, normalized=False) for t in specials],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(corpus, trainer=trainer)
    backend.add_tokens([AddedToken(t, special=False, normalized=False) for t in _REASONING_TOKENS])

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=bos_token,
        eos_token=eos_token,
        pad_token=pad_token,
        padding_side="left",
        clean_up_tokenization_spaces=False,
        model_max_length=4096,
    )
    tokenizer.chat_template = chat_template
    return tokenizer


def _rope_sections(head_dim: int, interleaved: bool) -> list[int]:
    """Split the head's rotary frequencies (head_dim/2 of them) into temporal/height/width parts.

    Proportions follow the released checkpoints: 16/24/24 of 64 (Qwen2.5-VL, contiguous) and
    24/20/20 of 64 (Qwen3-VL, interleaved), with at least one frequency per axis.
    """
    half = head_dim // 2
    if interleaved:
        spatial = max(1, (half * 20) // 64)
        return [half - 2 * spatial, spatial, spatial]
    temporal = max(1, (half * 16) // 64)
    height = (half - temporal) // 2
    return [temporal, height, half - temporal - height]


# Width of a decoder attention head. vLLM's CPU attention backend serves head sizes 32, 64, 80,
# 96, ... but not 16, so 32 is the smallest width that vLLM can run. Only the decoder's paged
# attention has that limit: the vision towers keep heads of width 16, which vLLM runs.
_TEXT_HEAD_DIM = 32

# Qwen3.5's gated delta net: one key head and two value heads (the released 9B: 16 and 32), a
# causal convolution over 4 positions. Heads are 128 wide, as released: vLLM's CPU kernel
# (chunk_gated_delta_rule_cpu) refuses other widths ("Unexpected head dim size, 32").
_LINEAR_HEAD_DIM = 128
_LINEAR_KEY_HEADS = 1
_LINEAR_VALUE_HEADS = 2
_LINEAR_CONV_KERNEL = 4


def _text_dims(hidden_size: int) -> tuple[int, int, int]:
    """(attention heads, key/value heads, head_dim) for a tiny decoder.

    Heads are ``_TEXT_HEAD_DIM`` (32) wide; with an even head count the key/value heads are
    shared 2:1 (GQA), with an odd one (e.g. hidden 32 or 96) every head has its own.
    """
    head_dim = _TEXT_HEAD_DIM
    heads = hidden_size // head_dim
    kv_heads = heads // 2 if heads % 2 == 0 else heads
    return heads, kv_heads, head_dim


def _text_config(
    spec: _ArchSpec, token_ids: dict[str, int], vocab: int, hidden_size: int, num_layers: int
) -> dict[str, Any]:
    """The decoder entries both families share."""
    heads, kv_heads, _ = _text_dims(hidden_size)
    return {
        "vocab_size": vocab,
        "hidden_size": hidden_size,
        "intermediate_size": 2 * hidden_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "max_position_embeddings": 4096,
        "bos_token_id": token_ids[spec.model_bos_token],
        "eos_token_id": token_ids[spec.eos_token],
        "pad_token_id": token_ids[spec.pad_token],
    }


def _qwen_config(
    spec: _ArchSpec,
    token_ids: dict[str, int],
    vocab: int,
    hidden_size: int,
    num_layers: int,
    vision_hidden: int,
    vision_depth: int,
):
    _, _, head_dim = _text_dims(hidden_size)
    rotary_dim = head_dim
    if spec.partial_rotary_factor is not None:
        rotary_dim = int(head_dim * spec.partial_rotary_factor)
    rope: dict[str, Any] = {
        "rope_type": "default",
        "rope_theta": spec.rope_theta,
        "mrope_section": _rope_sections(rotary_dim, interleaved=spec.mrope_interleaved),
    }
    if spec.mrope_interleaved:
        rope["mrope_interleaved"] = True
    if spec.partial_rotary_factor is not None:
        rope["partial_rotary_factor"] = spec.partial_rotary_factor
    text = {
        **_text_config(spec, token_ids, vocab, hidden_size, num_layers),
        **({"head_dim": head_dim} if spec.text_head_dim_field else {}),
        "rope_parameters": rope,
    }
    if spec.full_attention_interval is not None:
        interval = spec.full_attention_interval
        text["layer_types"] = [
            "full_attention" if (i + 1) % interval == 0 else "linear_attention"
            for i in range(num_layers)
        ]
        text.update(
            linear_conv_kernel_dim=_LINEAR_CONV_KERNEL,
            linear_key_head_dim=_LINEAR_HEAD_DIM,
            linear_value_head_dim=_LINEAR_HEAD_DIM,
            linear_num_key_heads=_LINEAR_KEY_HEADS,
            linear_num_value_heads=_LINEAR_VALUE_HEADS,
        )
    vision: dict[str, Any] = {
        "depth": vision_depth,
        "hidden_size": vision_hidden,
        "intermediate_size": 2 * vision_hidden,
        "num_heads": max(1, vision_hidden // 16),
        "patch_size": spec.patch_size,
        "spatial_merge_size": spec.merge_size,
        "temporal_patch_size": spec.temporal_patch_size,
        "out_hidden_size": hidden_size,
    }
    if spec.window_size is not None:
        # The last block attends globally, the others in windows, as in the released models.
        vision["window_size"] = spec.window_size
        vision["fullatt_block_indexes"] = [vision_depth - 1]
    if spec.num_position_embeddings is not None:
        vision["num_position_embeddings"] = spec.num_position_embeddings
    if spec.deepstack_visual_indexes is not None:
        vision["deepstack_visual_indexes"] = list(spec.deepstack_visual_indexes)
    ids = {field: token_ids[token] for field, token in spec.config_token_ids}
    return getattr(transformers, spec.config_class)(text_config=text, vision_config=vision, **ids)


def _idefics3_config(
    spec: _ArchSpec,
    token_ids: dict[str, int],
    vocab: int,
    hidden_size: int,
    num_layers: int,
    vision_hidden: int,
    vision_depth: int,
    image_size: int,
):
    _, _, head_dim = _text_dims(hidden_size)
    text = {
        "model_type": "llama",
        **_text_config(spec, token_ids, vocab, hidden_size, num_layers),
        "head_dim": head_dim,
        "rms_norm_eps": 1e-5,
    }
    vision = {
        "hidden_size": vision_hidden,
        "intermediate_size": 2 * vision_hidden,
        "num_hidden_layers": vision_depth,
        "num_attention_heads": max(1, vision_hidden // 16),
        "image_size": image_size,
        "patch_size": spec.patch_size,
    }
    return getattr(transformers, spec.config_class)(
        text_config=text,
        vision_config=vision,
        **{field: token_ids[token] for field, token in spec.config_token_ids},
        scale_factor=spec.merge_size,
        pad_token_id=token_ids[spec.pad_token],
    )


def _image_processor_class(name: str) -> str:
    """The backend AutoImageProcessor picks when it reloads the saved processor: torchvision where
    it is installed, PIL elsewhere. Building with the same one keeps a save/load round trip exact
    (the two resize slightly differently)."""
    from transformers.utils import is_torchvision_available

    return name if is_torchvision_available() else f"{name}Pil"


def _image_processor(
    spec: _ArchSpec, min_pixels: int | None, max_pixels: int | None, image_size: int
):
    cls = getattr(transformers, _image_processor_class(spec.image_processor_class))
    if spec.family == "qwen":
        return cls(
            patch_size=spec.patch_size,
            temporal_patch_size=spec.temporal_patch_size,
            merge_size=spec.merge_size,
            min_pixels=min_pixels,
            max_pixels=max_pixels,
            image_mean=list(spec.image_mean),
            image_std=list(spec.image_std),
        )
    # One global view per image (no tiling) keeps prompts short: (image_size/patch)^2/scale^2
    # image tokens. With do_image_splitting=True an image of up to 2*image_size px becomes up to
    # 2x2 tiles plus the global view, as the released processors do at larger sizes.
    return cls(
        do_resize=True,
        size={"longest_edge": 2 * image_size},
        max_image_size={"longest_edge": image_size},
        do_image_splitting=False,
        image_mean=list(spec.image_mean),
        image_std=list(spec.image_std),
    )


def _validate_build_args(
    arch: str,
    hidden_size: int,
    num_layers: int,
    vision_hidden_size: int,
    vision_depth: int,
    image_size: int,
    min_pixels: int | None,
    max_pixels: int | None,
) -> None:
    if arch not in _ARCH_SPECS:
        raise ValueError(f"arch must be one of {supported_architectures()}, got {arch!r}.")
    for name, value in (
        ("hidden_size", hidden_size),
        ("num_layers", num_layers),
        ("vision_hidden_size", vision_hidden_size),
        ("vision_depth", vision_depth),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    if hidden_size % _TEXT_HEAD_DIM:
        raise ValueError(
            f"hidden_size must be a multiple of {_TEXT_HEAD_DIM} (decoder attention heads of width "
            f"{_TEXT_HEAD_DIM}, the smallest vLLM can serve), got {hidden_size}."
        )
    if vision_hidden_size % 16:
        raise ValueError(
            "vision_hidden_size must be a multiple of 16 (vision attention heads of width 16), "
            f"got {vision_hidden_size}."
        )
    if _ARCH_SPECS[arch].family == "idefics3" and (image_size < 32 or image_size % 32):
        raise ValueError(f"image_size must be a positive multiple of 32, got {image_size}.")
    if min_pixels is not None and max_pixels is not None and min_pixels > max_pixels:
        raise ValueError(f"min_pixels ({min_pixels}) must not exceed max_pixels ({max_pixels}).")


def build_tiny_vlm(
    arch: str,
    save_dir: str | Path | None = None,
    *,
    seed: int = 0,
    hidden_size: int = 64,
    num_layers: int = 2,
    vision_hidden_size: int = 32,
    vision_depth: int = 2,
    vocab_texts: Iterable[str] | None = None,
    vocab_size: int = 512,
    image_size: int = 64,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
) -> tuple[PreTrainedModel, ProcessorMixin]:
    """Build a tiny random-initialised real VLM and its processor, fully offline.

    Architectures (``supported_architectures()``):
      * ``"qwen2_5_vl"``: Qwen2_5_VLForConditionalGeneration; 14-px patches, 2x2 merge, CLIP
        mean/std, windowed + full attention vision blocks, 3D (M-)RoPE decoder.
      * ``"qwen3_vl"``: Qwen3VLForConditionalGeneration; 16-px patches, 2x2 merge, mean/std 0.5,
        interleaved M-RoPE, DeepStack.
      * ``"qwen3_5"``: Qwen3_5ForConditionalGeneration; Qwen3-VL's vision geometry (16-px
        patches, 2x2 merge, mean/std 0.5, learned positions, no DeepStack) and processor; a
        hybrid decoder whose odd layers (1st, 3rd, ...) are gated-delta-net linear attention and
        even ones full attention with a quarter of each head rotated (interleaved M-RoPE).
      * ``"smolvlm"``: SmolVLMForConditionalGeneration (Idefics3 family, Llama decoder); square
        ``image_size`` images, 16-px patches, pixel-shuffle factor 2, mean/std 0.5.

    Weights are a pure function of ``seed`` and the size arguments (the global torch RNG is left
    untouched); the tokenizer is a pure function of the corpus and ``vocab_size``.

    Args:
        arch: one of ``supported_architectures()``.
        save_dir: if given, model, processor, tokenizer and chat template are saved there, so
            ``vppo.models.load_model_and_processor(save_dir)`` reloads them.
        seed: seed for the weight initialisation.
        hidden_size, num_layers: decoder width (a multiple of 32) and depth. Decoder heads are
            32 wide, the smallest head size vLLM's CPU attention serves; the default 64 gives
            2 query heads sharing 1 key/value head.
        vision_hidden_size, vision_depth: vision tower width (a multiple of 16; heads of width
            16) and depth.
        vocab_texts: BPE training corpus; defaults to ``DEFAULT_CORPUS``.
        vocab_size: upper bound on the vocabulary (the model's vocabulary is the trained size).
        image_size: SmolVLM only; images are resized to fit (and padded to) this square.
        min_pixels, max_pixels: Qwen only; pixel budget of the image processor. Defaults:
            4 and 16 merged patches (56x56..112x112 px for Qwen2.5-VL, 64x64..128x128 for
            Qwen3-VL), i.e. 4 to 16 image tokens per image.

    Returns:
        (model in eval mode on CPU in float32, processor with left padding).
    """
    _validate_build_args(
        arch,
        hidden_size,
        num_layers,
        vision_hidden_size,
        vision_depth,
        image_size,
        min_pixels,
        max_pixels,
    )
    spec = _ARCH_SPECS[arch]
    tokenizer = train_bpe_tokenizer(
        DEFAULT_CORPUS if vocab_texts is None else vocab_texts,
        vocab_size,
        spec.special_tokens,
        bos_token=spec.bos_token,
        eos_token=spec.eos_token,
        pad_token=spec.pad_token,
        chat_template=spec.chat_template,
    )
    token_ids = {t: tokenizer.convert_tokens_to_ids(t) for t in spec.special_tokens}
    vocab = len(tokenizer)
    sizes = (hidden_size, num_layers, vision_hidden_size, vision_depth)

    image_seq_len = None
    if spec.family == "qwen":
        unit = spec.patch_size * spec.merge_size
        min_pixels = 4 * unit * unit if min_pixels is None else min_pixels
        max_pixels = 16 * unit * unit if max_pixels is None else max_pixels
        if min_pixels > max_pixels:
            raise ValueError(
                f"min_pixels ({min_pixels}) must not exceed max_pixels ({max_pixels})."
            )
        config = _qwen_config(spec, token_ids, vocab, *sizes)
    else:
        config = _idefics3_config(spec, token_ids, vocab, *sizes, image_size)
        image_seq_len = (image_size // spec.patch_size) ** 2 // spec.merge_size**2

    image_processor = _image_processor(spec, min_pixels, max_pixels, image_size)
    processor = make_processor(arch, image_processor, tokenizer, image_seq_len=image_seq_len)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = getattr(transformers, spec.model_class)(config)
    model.generation_config = GenerationConfig(
        bos_token_id=token_ids[spec.model_bos_token],
        eos_token_id=[token_ids[t] for t in spec.stop_tokens],
        pad_token_id=token_ids[spec.pad_token],
    )
    model.eval()

    if save_dir is not None:
        save_tiny_vlm(model, processor, save_dir, arch=arch, seed=seed)
    return model, processor


def save_tiny_vlm(
    model: PreTrainedModel, processor: ProcessorMixin, save_dir: str | Path, *, arch: str, seed: int
) -> Path:
    """Save model + processor (tokenizer, chat template, image processor) into ``save_dir``.

    Also writes ``vppo_tiny.json`` recording how the model was built (arch, seed, parameter count).
    """
    path = Path(save_dir)
    if path.exists() and not path.is_dir():
        raise ValueError(f"save_dir {str(path)!r} exists and is not a directory.")
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    info = {
        "arch": arch,
        "seed": seed,
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(processor.tokenizer),
    }
    (path / "vppo_tiny.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return path
