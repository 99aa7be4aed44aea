"""Processor helpers: image-only processors that work without torchvision, loading, vision layout.

Why image-only processors exist: transformers 5.23 defines its video processors only when
torchvision is installed, and ``ProcessorMixin`` refuses ``video_processor=None`` for
Qwen2/2.5/3-VL and SmolVLM. No torchvision build matches the CPU torch 2.13 wheel, so on CPU
machines ``AutoProcessor`` cannot build these processors at all. ``ProcessorMixin`` derives its
list of sub-processors from the ``__init__`` signature, so a subclass whose ``__init__`` has no
``video_processor`` parameter needs none. `image_only_subclass` builds such a subclass of each
upstream class (one row of ``_IMAGE_ONLY_SPECS`` per architecture); it behaves like the upstream
class for text and images, and video inputs raise a clear error.

They save themselves under the upstream class name, so a directory written here loads with plain
``AutoProcessor`` wherever torchvision is installed (GPU machines), and with `load_processor`
everywhere.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import (
    AutoProcessor,
    ProcessorMixin,
    Qwen2_5_VLProcessor,
    Qwen2VLProcessor,
    Qwen3VLProcessor,
    SmolVLMProcessor,
)
from transformers.utils import cached_file

__all__ = [
    "ImageOnlyQwen2_5_VLProcessor",
    "ImageOnlyQwen2VLProcessor",
    "ImageOnlyQwen3VLProcessor",
    "ImageOnlySmolVLMProcessor",
    "VisionLayout",
    "image_only_processor_class",
    "image_only_subclass",
    "load_processor",
    "looks_like_local_path",
    "make_processor",
    "vision_layout",
]

logger = logging.getLogger(__name__)


class VideoInputsUnsupported:
    """Stand-in for a video processor on processors built without one.

    SmolVLM's ``apply_chat_template`` reads ``video_processor.num_frames`` and ``.fps`` even for
    image-only conversations; both are None here. Calling it (i.e. passing videos) raises.
    """

    num_frames = None
    fps = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise ValueError(
            "videos are not supported by this image-only processor; install torchvision and load "
            "the processor with AutoProcessor to process videos."
        )

    def __repr__(self) -> str:
        return "VideoInputsUnsupported()"


class _SaveAsUpstreamMixin:
    """Serialise under the upstream processor class name so stock AutoProcessor can reload."""

    upstream_class_name: str = ""
    # Video processor written into processor_config.json (with the image processor's geometry),
    # so that stock AutoProcessor finds one where torchvision is installed.
    video_processor_type: str = ""
    video_processor_keys: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        output = super().to_dict()  # type: ignore[misc]
        output["processor_class"] = self.upstream_class_name
        if "video_processor" not in output:
            image_config = self.image_processor.to_dict()  # type: ignore[attr-defined]
            video_config = {
                k: image_config[k] for k in self.video_processor_keys if k in image_config
            }
            output["video_processor"] = {
                "video_processor_type": self.video_processor_type,
                **video_config,
            }
        return output

    def save_pretrained(self, save_directory: str | Path, *args: Any, **kwargs: Any) -> list[str]:
        files = super().save_pretrained(save_directory, *args, **kwargs)  # type: ignore[misc]
        # The tokenizer was saved with this subclass's name as its processor class; point it at
        # the upstream class too, so no file names a class that only exists in vppo.
        tokenizer_config = Path(save_directory) / "tokenizer_config.json"
        if tokenizer_config.is_file():
            data = json.loads(tokenizer_config.read_text(encoding="utf-8"))
            if data.get("processor_class") == type(self).__name__:
                data["processor_class"] = self.upstream_class_name
                tokenizer_config.write_text(
                    json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
                )
        return files


def _init_without_video(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
    """Qwen2/2.5/3-VL: the upstream ``__init__`` less its ``video_processor`` parameter."""
    # The upstream class follows the mixin in the MRO. Its extra positional None (the video
    # processor) is dropped by ProcessorMixin, which pairs arguments with the sub-processors
    # named in *this* signature.
    super(_SaveAsUpstreamMixin, self).__init__(  # type: ignore[misc]
        image_processor, tokenizer, None, chat_template=chat_template, **kwargs
    )


def _init_smolvlm_without_video(
    self,
    image_processor,
    tokenizer,
    image_seq_len: int = 169,
    chat_template: str | None = None,
    **kwargs,
):
    """SmolVLM: the upstream ``__init__`` insists on ``num2words``, which only video prompts use,
    so this one sets the same attributes itself and skips that check."""
    self.fake_image_token = getattr(tokenizer, "fake_image_token", "<fake_token_around_image>")
    self.image_token = getattr(tokenizer, "image_token", "<image>")
    self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
    self.end_of_utterance_token = getattr(tokenizer, "end_of_utterance_token", "<end_of_utterance>")
    self.global_image_token = getattr(tokenizer, "global_image_token", "<global-img>")
    self.image_seq_len = image_seq_len
    self.video_token = getattr(tokenizer, "video_token", "<video>")
    ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template, **kwargs)
    self.video_processor = VideoInputsUnsupported()


@dataclass(frozen=True)
class _ImageOnlySpec:
    """One architecture's image-only processor: what differs from the others.

    Attributes:
        base: the upstream processor class.
        model_types: ``config.json`` model types whose checkpoints use ``base``.
        video_processor_type, video_processor_keys: see `_SaveAsUpstreamMixin`.
        init: the ``__init__`` without a ``video_processor`` parameter.
    """

    base: type[ProcessorMixin]
    model_types: tuple[str, ...]
    video_processor_type: str
    video_processor_keys: tuple[str, ...]
    init: Callable[..., None]


_QWEN_VIDEO_KEYS = ("patch_size", "temporal_patch_size", "merge_size", "image_mean", "image_std")

# One row per upstream processor, keyed by its class name.
_IMAGE_ONLY_SPECS: dict[str, _ImageOnlySpec] = {
    spec.base.__name__: spec
    for spec in (
        _ImageOnlySpec(
            Qwen2VLProcessor,
            ("qwen2_vl",),
            "Qwen2VLVideoProcessor",
            _QWEN_VIDEO_KEYS,
            _init_without_video,
        ),
        _ImageOnlySpec(
            Qwen2_5_VLProcessor,
            ("qwen2_5_vl",),
            "Qwen2VLVideoProcessor",
            _QWEN_VIDEO_KEYS,
            _init_without_video,
        ),
        # Qwen3.5 checkpoints name this processor too (transformers' processing_auto).
        _ImageOnlySpec(
            Qwen3VLProcessor,
            ("qwen3_vl", "qwen3_vl_moe", "qwen3_5", "qwen3_5_moe"),
            "Qwen3VLVideoProcessor",
            _QWEN_VIDEO_KEYS,
            _init_without_video,
        ),
        _ImageOnlySpec(
            SmolVLMProcessor,
            ("smolvlm",),
            "SmolVLMVideoProcessor",
            ("image_mean", "image_std", "max_image_size"),
            _init_smolvlm_without_video,
        ),
    )
}


@functools.cache
def image_only_subclass(base: type[ProcessorMixin]) -> type[ProcessorMixin]:
    """The image-only subclass of the upstream processor class ``base`` (one class per base).

    It is named ``ImageOnly<base name>``, lives in this module (so instances pickle), has no
    ``video_processor`` sub-processor and saves itself as ``base``.

    Raises:
        ValueError: ``base`` is not one of the supported upstream processors.
    """
    spec = _IMAGE_ONLY_SPECS.get(getattr(base, "__name__", ""))
    if spec is None or spec.base is not base:
        raise ValueError(
            f"base must be one of the upstream processors {sorted(_IMAGE_ONLY_SPECS)}, got {base!r}."
        )
    name = f"ImageOnly{base.__name__}"
    namespace = {
        "__module__": __name__,
        "__qualname__": name,
        "__doc__": f"``{base.__name__}`` without a video processor (works without torchvision).",
        "__init__": spec.init,
        "upstream_class_name": base.__name__,
        "video_processor_type": spec.video_processor_type,
        "video_processor_keys": spec.video_processor_keys,
    }
    return type(name, (_SaveAsUpstreamMixin, base), namespace)


ImageOnlyQwen2VLProcessor = image_only_subclass(Qwen2VLProcessor)
ImageOnlyQwen2_5_VLProcessor = image_only_subclass(Qwen2_5_VLProcessor)
ImageOnlyQwen3VLProcessor = image_only_subclass(Qwen3VLProcessor)
ImageOnlySmolVLMProcessor = image_only_subclass(SmolVLMProcessor)

_IMAGE_ONLY_BY_UPSTREAM: dict[str, type[ProcessorMixin]] = {
    name: image_only_subclass(spec.base) for name, spec in _IMAGE_ONLY_SPECS.items()
}
_UPSTREAM_BY_MODEL_TYPE: dict[str, str] = {
    model_type: name for name, spec in _IMAGE_ONLY_SPECS.items() for model_type in spec.model_types
}


def looks_like_local_path(name: str) -> bool:
    """True when ``name`` can only be a filesystem path, not a Hub id ("model" or "org/model")."""
    return (
        name.startswith(("/", "./", "../", "~"))
        or name.count("/") > 1
        or "\\" in name
        or name in (".", "..")
    )


def make_processor(
    arch: str,
    image_processor: Any,
    tokenizer: Any,
    *,
    image_seq_len: int | None = None,
    chat_template: str | None = None,
) -> ProcessorMixin:
    """Assemble an image-only processor for ``arch`` (a model type such as ``"qwen2_5_vl"``).

    ``chat_template`` defaults to the tokenizer's. The tokenizer is switched to left padding.
    """
    if arch not in _UPSTREAM_BY_MODEL_TYPE:
        raise ValueError(f"arch must be one of {sorted(_UPSTREAM_BY_MODEL_TYPE)}, got {arch!r}.")
    cls = _IMAGE_ONLY_BY_UPSTREAM[_UPSTREAM_BY_MODEL_TYPE[arch]]
    template = chat_template if chat_template is not None else tokenizer.chat_template
    tokenizer.padding_side = "left"
    if cls is ImageOnlySmolVLMProcessor:
        if image_seq_len is None:
            raise ValueError("image_seq_len is required for a SmolVLM processor.")
        return cls(image_processor, tokenizer, image_seq_len=image_seq_len, chat_template=template)
    return cls(image_processor, tokenizer, chat_template=template)


def _read_json(path_or_name: str | Path, filename: str, **hub_kwargs: Any) -> dict[str, Any] | None:
    keep = {"cache_dir", "revision", "token", "local_files_only", "subfolder"}
    resolved = cached_file(
        str(path_or_name),
        filename,
        _raise_exceptions_for_missing_entries=False,
        _raise_exceptions_for_connection_errors=False,
        _raise_exceptions_for_gated_repo=False,
        **{k: v for k, v in hub_kwargs.items() if k in keep},
    )
    if resolved is None:
        return None
    with open(resolved, encoding="utf-8") as handle:
        return json.load(handle)


def image_only_processor_class(path_or_name: str | Path, **hub_kwargs: Any) -> type | None:
    """The image-only processor class matching a saved processor or model, or None if unknown.

    Looks at ``processor_config.json`` (``processor_class``), then ``tokenizer_config.json``,
    then ``config.json`` (``model_type``).
    """
    for filename in ("processor_config.json", "tokenizer_config.json"):
        data = _read_json(path_or_name, filename, **hub_kwargs) or {}
        name = data.get("processor_class")
        if isinstance(name, str):
            name = name.removeprefix("ImageOnly")
            if name in _IMAGE_ONLY_BY_UPSTREAM:
                return _IMAGE_ONLY_BY_UPSTREAM[name]
    config = _read_json(path_or_name, "config.json", **hub_kwargs) or {}
    upstream = _UPSTREAM_BY_MODEL_TYPE.get(config.get("model_type", ""))
    return _IMAGE_ONLY_BY_UPSTREAM[upstream] if upstream else None


def load_processor(path_or_name: str | Path, **kwargs: Any) -> ProcessorMixin:
    """Load a VLM processor; fall back to an image-only processor when video support is missing.

    ``AutoProcessor.from_pretrained`` is tried first (the normal path on machines with torchvision).
    If it fails and the checkpoint is a Qwen2/2.5/3-VL or SmolVLM model, the matching image-only
    subclass loads the same files instead. The tokenizer always pads on the left, as TRL's GRPO
    needs (prompt ids are left-padded and the processor's second pass must agree).

    Raises:
        FileNotFoundError: a local path that does not exist.
        AutoProcessor's own error when no image-only class applies, else the fallback's error.
    """
    name = str(path_or_name)
    if not Path(name).expanduser().exists() and (
        isinstance(path_or_name, Path) or looks_like_local_path(name)
    ):
        raise FileNotFoundError(f"processor directory {name!r} does not exist.")
    kwargs = dict(kwargs)
    kwargs.pop("padding_side", None)
    try:
        processor = AutoProcessor.from_pretrained(name, **kwargs)
    except (OSError, ValueError, AttributeError, ImportError, TypeError, KeyError) as auto_error:
        hub_kwargs = {k: v for k, v in kwargs.items() if k != "trust_remote_code"}
        try:
            cls = image_only_processor_class(path_or_name, **hub_kwargs)
        except (OSError, ValueError):
            cls = None
        if cls is None:
            raise
        logger.info(
            "AutoProcessor could not load %s (%s); using %s instead.",
            path_or_name,
            auto_error,
            cls.__name__,
        )
        fallback_kwargs = {k: v for k, v in kwargs.items() if k != "trust_remote_code"}
        processor = cls.from_pretrained(name, **fallback_kwargs)
    tokenizer = getattr(processor, "tokenizer", None)
    if tokenizer is None:
        raise ValueError(f"the processor loaded from {str(path_or_name)!r} has no tokenizer.")
    tokenizer.padding_side = "left"
    return processor


# --------------------------------------------------------------------------------------------
# Vision layout
# --------------------------------------------------------------------------------------------

_QWEN_VISION_TOKENS = (
    "<|image_pad|>",
    "<|video_pad|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
)
_IDEFICS_VISION_TOKENS = ("<image>", "<fake_token_around_image>", "<global-img>", "<video>")
_ROW_COL_TOKEN = re.compile(r"^<row_\d+_col_\d+>$")


@dataclass(frozen=True)
class VisionLayout:
    """How a processor lays out ``pixel_values`` and which token ids stand for vision inputs.

    Attributes:
        layout: ``"qwen_flat"``: rows of flattened patches, shape (sum_i t_i*h_i*w_i,
            C*temporal_patch_size*patch_size**2), one row per ViT patch, consecutive groups of
            merge_size**2 rows forming one LLM image token (Qwen2/2.5/3-VL).
            ``"bnchw"``: (B, N_img, C, H, W) with all-zero padding images (Idefics3/SmolVLM).
            ``"nchw"``: (N_img, C, H, W) (LLaVA/Gemma-style).
        patch_size: side of one ViT patch in pixels.
        temporal_patch_size: frames per patch (Qwen; 1 for still-image layouts).
        merge_size: patches merged per side into one LLM token (Qwen spatial merge, SmolVLM pixel
            shuffle factor; 1 when unknown for "nchw").
        image_mean, image_std: per-channel normalisation; a black pixel is (0 - mean) / std.
        image_token_id: id of the placeholder token that the processor repeats per image token.
        video_token_id: id of the video placeholder, or None.
        pad_token_ids_to_ban: every vision placeholder id (image/video pads, vision start/end,
            SmolVLM's <fake_token_around_image>, <global-img>, <row_i_col_j>, ...). The policy
            must never generate these: a completion containing one cannot be re-scored.
    """

    layout: str
    patch_size: int
    temporal_patch_size: int
    merge_size: int
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]
    image_token_id: int
    video_token_id: int | None
    pad_token_ids_to_ban: tuple[int, ...]

    @property
    def black_value(self) -> tuple[float, float, float]:
        """Normalised value of a black pixel per channel, (0 - mean) / std."""
        return tuple(-m / s for m, s in zip(self.image_mean, self.image_std, strict=True))


def _token_id(tokenizer: Any, token: str) -> int | None:
    vocab = tokenizer.get_vocab()
    return vocab.get(token)


def _triple(values: Any, field: str) -> tuple[float, float, float]:
    if isinstance(values, (int, float)):
        values = [values] * 3
    values = tuple(float(v) for v in values)
    if len(values) != 3:
        raise ValueError(f"image processor {field} must have 3 channels, got {len(values)}.")
    return values  # type: ignore[return-value]


def _config_value(model_config: Any, *names: str) -> Any:
    """First attribute found along a dotted path, e.g. "vision_config.patch_size"."""
    for name in names:
        obj = model_config
        for part in name.split("."):
            obj = getattr(obj, part, None) if not isinstance(obj, dict) else obj.get(part)
            if obj is None:
                break
        if obj is not None:
            return obj
    return None


def vision_layout(processor: Any, model_config: Any = None) -> VisionLayout:
    """Describe the processor's ``pixel_values`` layout and its vision token ids.

    Args:
        processor: a VLM processor with ``image_processor`` and ``tokenizer``.
        model_config: the model's config. Required for layouts whose patch size the image
            processor does not know (SmolVLM/Idefics3: ``vision_config.patch_size`` and
            ``scale_factor``); when given, its ``image_token_id`` wins over the tokenizer's.

    Returns:
        A frozen `VisionLayout`.
    """
    image_processor = getattr(processor, "image_processor", None)
    tokenizer = getattr(processor, "tokenizer", None)
    if image_processor is None or tokenizer is None:
        raise ValueError("processor must have an image_processor and a tokenizer.")
    mean = _triple(image_processor.image_mean, "image_mean")
    std = _triple(image_processor.image_std, "image_std")
    if any(s <= 0 for s in std):
        raise ValueError(f"image processor image_std must be positive, got {std}.")
    added = tokenizer.get_added_vocab()

    is_qwen = all(
        getattr(image_processor, name, None) is not None
        for name in ("patch_size", "merge_size", "temporal_patch_size")
    )
    is_idefics = hasattr(image_processor, "max_image_size") and hasattr(processor, "image_seq_len")

    if is_qwen:
        layout = "qwen_flat"
        patch_size = int(image_processor.patch_size)
        temporal = int(image_processor.temporal_patch_size)
        merge = int(image_processor.merge_size)
        placeholder_tokens = [t for t in _QWEN_VISION_TOKENS if t in added]
        image_token = getattr(processor, "image_token", "<|image_pad|>")
        video_token = getattr(processor, "video_token", "<|video_pad|>")
    elif is_idefics:
        layout = "bnchw"
        temporal = 1
        patch_size = _config_value(model_config, "vision_config.patch_size")
        merge = _config_value(model_config, "scale_factor")
        if patch_size is None or merge is None:
            raise ValueError(
                "model_config (with vision_config.patch_size and scale_factor) is required for "
                "the SmolVLM/Idefics3 layout, whose image processor does not know its patch size."
            )
        patch_size, merge = int(patch_size), int(merge)
        placeholder_tokens = [t for t in _IDEFICS_VISION_TOKENS if t in added]
        placeholder_tokens += sorted(t for t in added if _ROW_COL_TOKEN.match(t))
        image_token = getattr(processor, "image_token", "<image>")
        video_token = getattr(processor, "video_token", "<video>")
    else:
        layout = "nchw"
        temporal = 1
        patch_size = getattr(image_processor, "patch_size", None)
        if patch_size is None:
            patch_size = _config_value(model_config, "vision_config.patch_size")
        if isinstance(patch_size, dict):
            patch_size = patch_size.get("height")
        if patch_size is None:
            raise ValueError(
                "model_config with vision_config.patch_size is required: the image processor "
                "does not state its patch size."
            )
        patch_size = int(patch_size)
        merge = 1
        image_token = getattr(processor, "image_token", "<image>")
        video_token = getattr(processor, "video_token", "<video>")
        placeholder_tokens = [image_token]

    image_token_id = _config_value(model_config, "image_token_id", "image_token_index")
    if image_token_id is None:
        image_token_id = getattr(processor, "image_token_id", None)
    if image_token_id is None:
        image_token_id = _token_id(tokenizer, image_token)
    if image_token_id is None:
        raise ValueError(f"the tokenizer has no image token {image_token!r}.")
    video_token_id = _config_value(model_config, "video_token_id", "video_token_index")
    if video_token_id is None:
        video_token_id = _token_id(tokenizer, video_token)

    ban = {int(image_token_id)}
    if video_token_id is not None:
        ban.add(int(video_token_id))
    for token in placeholder_tokens:
        token_id = _token_id(tokenizer, token)
        if token_id is not None:
            ban.add(int(token_id))
    return VisionLayout(
        layout=layout,
        patch_size=patch_size,
        temporal_patch_size=temporal,
        merge_size=merge,
        image_mean=mean,
        image_std=std,
        image_token_id=int(image_token_id),
        video_token_id=None if video_token_id is None else int(video_token_id),
        pad_token_ids_to_ban=tuple(sorted(ban)),
    )


def collapse_placeholder_runs(ids: Sequence[int], token_id: int) -> list[int]:
    """``ids`` with every run of ``token_id`` cut to one token.

    A processor expands each image's placeholder to the N tokens its features fill (Qwen2/2.5/3-VL:
    ``<|image_pad|>`` × N). vLLM expects the unexpanded form, one placeholder per image, and
    expands it itself; handed the processor's ids it expands the first of the N again (2N − 1
    tokens per image, vLLM 0.30). This is the form vLLM expands to exactly ``ids`` for layouts whose
    images are one repeated token ("qwen_flat", "nchw"); not for SmolVLM/Idefics3, whose image
    block has row/column and wrapper tokens around the repeated one.
    """
    out: list[int] = []
    for token in ids:
        token = int(token)
        if token == token_id and out and out[-1] == token_id:
            continue
        out.append(token)
    return out


def image_pixel_limits(processor: Any) -> tuple[int, int] | None:
    """(min_pixels, max_pixels) a Qwen-VL image processor resizes every image into; None for
    processors without such a range (SmolVLM sizes by its longest edge)."""
    size = getattr(getattr(processor, "image_processor", processor), "size", None)
    low, high = (getattr(size, "get", lambda _: None)(k) for k in ("shortest_edge", "longest_edge"))
    if (
        low is None
        or high is None
        or not hasattr(getattr(processor, "image_processor", processor), "merge_size")
    ):
        return None
    return int(low), int(high)


def set_image_pixel_limits(processor: Any, min_pixels: int | None, max_pixels: int | None) -> None:
    """Make a Qwen-VL image processor resize into [min_pixels, max_pixels] (None: keep that bound).

    The trainer's processor and the colocated vLLM engine must resize alike, or the two see
    different image-token counts for one prompt; vLLM is handed this processor's range
    (`vllm_image_options`). A processor without a pixel range is left as it is.
    """
    current = image_pixel_limits(processor)
    if current is None:
        return
    low = current[0] if min_pixels is None else int(min_pixels)
    high = current[1] if max_pixels is None else int(max_pixels)
    image_processor = getattr(processor, "image_processor", processor)
    image_processor.size = {
        **dict(image_processor.size),
        "shortest_edge": low,
        "longest_edge": high,
    }
    for name, value in (("min_pixels", low), ("max_pixels", high)):
        if hasattr(image_processor, name):
            setattr(image_processor, name, value)


def vllm_image_options(processor: Any) -> dict[str, Any]:
    """`vllm.LLM` keywords that make vLLM resize images exactly as `processor` does.

    Without them vLLM reads the checkpoint's own processor config: its pixel range can differ from
    the trainer's (another image-token count, caught by the trainer's prompt check), and vLLM
    profiles its encoder and sizes its KV cache for the checkpoint's largest image (12.8 MP for
    Qwen2.5-VL) instead of the run's. Videos are switched off, which no vppo data holds.
    """
    limits = image_pixel_limits(processor)
    if limits is None:
        return {}
    return {
        "mm_processor_kwargs": {"size": {"shortest_edge": limits[0], "longest_edge": limits[1]}},
        "limit_mm_per_prompt": {"video": 0},
    }
