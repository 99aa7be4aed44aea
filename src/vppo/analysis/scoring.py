"""Model-side token-perception scoring: per-token log-probs with the real and the perturbed image.

``score_responses`` tokenises prompt + response exactly like TRL lays out a GRPO batch (prompt
left-padded by the processor, response right-padded after it), runs two no-grad forwards (real
image, and the uninformative image I' or, with perturbation ``"none"``, no image at all), and
returns one :class:`ResponseRecord` per response with every token's log-prob under both, its
visual dependency and the policy entropy.

Its steps per batch: :func:`_batch_inputs` (chat template, padding, pixels),
:func:`_perturbed_forward` (the inputs with I': :func:`_perturbed_pixels` per response, or
:func:`_without_images`, the prompts without their vision tokens and image tensors),
:func:`_batch_scores` (the two forwards, and the estimator through
:func:`vppo.perception.dependency_from_passes`, the dispatch the trainer can share); after the
last batch, :func:`_records` builds the records in input order.

``perturb_pixel_values`` is the one place that turns a processor's ``pixel_values`` into those
of I' for every perturbation name the trainer knows; it is pure (tensors, a layout, a
generator) apart from re-running the image processor for the image-space perturbations.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from vppo.perception import DEPENDENCY_ESTIMATORS as ESTIMATORS
from vppo.perception import (
    NO_IMAGE,
    PERTURBATIONS,
    dependency_from_passes,
    perturb_pixel_values,
    take_positions,
    text_only_positions,
)

__all__ = [
    "ESTIMATORS",
    "PERTURBATIONS",
    "ResponseRecord",
    "TokenRecord",
    "generate_responses",
    "perturb_pixel_values",
    "pixel_value_slices",
    "records_to_tensors",
    "response_seed",
    "score_responses",
    "token_logprobs_and_entropy",
    "token_strings",
]

# Processor outputs that are per-token and must be extended with zeros over the response.
_TOKEN_TYPE_KEYS = ("token_type_ids", "mm_token_type_ids")


# --------------------------------------------------------------------------------------------
# records
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenRecord:
    """One response token: its position, id, text and scores."""

    position: int
    token_id: int
    text: str
    logp_real: float
    logp_perturbed: float
    dependency: float
    entropy: float


@dataclass
class ResponseRecord:
    """One scored response; the per-token lists all have one entry per response token.

    ``dependency`` is the chosen estimator's score; ``logp_real``/``logp_perturbed`` are always
    the sampled tokens' log-probs (logits / temperature) with the real and the perturbed image,
    and ``entropy`` is the policy entropy with the real image, so any estimator can be recomputed.
    """

    index: int
    row: int
    sample: int
    question: str
    response: str
    answer: str | None
    correct: bool | None
    num_images: int
    token_ids: list[int] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    logp_real: list[float] = field(default_factory=list)
    logp_perturbed: list[float] = field(default_factory=list)
    dependency: list[float] = field(default_factory=list)
    entropy: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.token_ids)
        for name in ("tokens", "logp_real", "logp_perturbed", "dependency", "entropy"):
            if len(getattr(self, name)) != n:
                raise ValueError(
                    f"ResponseRecord {self.index}: field '{name}' has {len(getattr(self, name))} "
                    f"entries but the response has {n} tokens."
                )

    @property
    def trajectory_dependency(self) -> float:
        """Mean token dependency (paper §3.2.2); 0 for an empty response."""
        return sum(self.dependency) / len(self.dependency) if self.dependency else 0.0

    def token_records(self) -> list[TokenRecord]:
        return [
            TokenRecord(t, i, s, a, b, d, e)
            for t, (i, s, a, b, d, e) in enumerate(
                zip(
                    self.token_ids,
                    self.tokens,
                    self.logp_real,
                    self.logp_perturbed,
                    self.dependency,
                    self.entropy,
                    strict=True,
                )
            )
        ]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["trajectory_dependency"] = self.trajectory_dependency
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ResponseRecord:
        names = {f for f in cls.__dataclass_fields__}
        missing = sorted(n for n in ("index", "token_ids", "dependency") if n not in data)
        if missing:
            raise ValueError(f"record is missing field(s) {', '.join(missing)}.")
        return cls(**{k: v for k, v in data.items() if k in names})


def records_to_tensors(records: Sequence[ResponseRecord]) -> dict[str, Any]:
    """Right-padded tensors for :func:`vppo.analysis.perception_statistics`.

    Returns:
        ``dep`` [B, T] float64, ``mask`` [B, T] bool, ``entropy`` [B, T] float64,
        ``logp_real``/``logp_perturbed`` [B, T] float64, ``correct`` [B] float64 or ``None``
        (``None`` unless every record has a verdict), ``tokens`` (list of lists of str).
    """
    b = len(records)
    t = max((len(r.token_ids) for r in records), default=0)
    out = {
        k: torch.zeros(b, t, dtype=torch.float64)
        for k in ("dep", "entropy", "logp_real", "logp_perturbed")
    }
    mask = torch.zeros(b, t, dtype=torch.bool)
    for i, r in enumerate(records):
        n = len(r.token_ids)
        mask[i, :n] = True
        out["dep"][i, :n] = torch.tensor(r.dependency, dtype=torch.float64)
        out["entropy"][i, :n] = torch.tensor(r.entropy, dtype=torch.float64)
        out["logp_real"][i, :n] = torch.tensor(r.logp_real, dtype=torch.float64)
        out["logp_perturbed"][i, :n] = torch.tensor(r.logp_perturbed, dtype=torch.float64)
    verdicts = [r.correct for r in records]
    correct = (
        torch.tensor([float(v) for v in verdicts], dtype=torch.float64)
        if records and all(v is not None for v in verdicts)
        else None
    )
    return {**out, "mask": mask, "correct": correct, "tokens": [list(r.tokens) for r in records]}


# --------------------------------------------------------------------------------------------
# perturbation (shared with the trainer)
# --------------------------------------------------------------------------------------------


def pixel_value_slices(
    vision: Any, images_per_row: Sequence[int], image_grid_thw: torch.Tensor | None = None
) -> list[slice]:
    """The slice of dim 0 of ``pixel_values`` that belongs to each prompt row.

    ``qwen_flat``: the rows of that prompt's images (t·h·w each, from ``image_grid_thw``);
    ``bnchw``: one entry per prompt row; ``nchw``: that prompt's images.
    """
    if vision.layout == "bnchw":
        return [slice(i, i + 1) for i in range(len(images_per_row))]
    if vision.layout == "qwen_flat":
        if image_grid_thw is None:
            raise ValueError("qwen_flat pixel_values need image_grid_thw to be split per response.")
        sizes = image_grid_thw.prod(-1).tolist()
    else:
        sizes = [1] * int(sum(images_per_row))
    if len(sizes) != sum(images_per_row):
        raise ValueError(
            f"the processor returned {len(sizes)} images but the batch holds {sum(images_per_row)}."
        )
    slices, image, start = [], 0, 0
    for count in images_per_row:
        stop = start + int(sum(sizes[image : image + count]))
        slices.append(slice(start, stop))
        image += count
        start = stop
    return slices


def response_seed(seed: int, index: int) -> int:
    """63-bit seed of response ``index``'s perturbation mask: independent of batching."""
    digest = hashlib.sha256(f"vppo-analysis|{seed}|{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


# --------------------------------------------------------------------------------------------
# tokens
# --------------------------------------------------------------------------------------------


def token_strings(tokenizer: Any, ids: Sequence[int]) -> list[str]:
    """The text each token adds to the decoded response; the pieces concatenate to the decode.

    Incremental detokenisation: a byte-level token that ends in the middle of a UTF-8 character
    adds "" and the character is attributed to the token that completes it. Decoding a short
    window with its preceding tokens keeps SentencePiece-style leading spaces right.
    """
    ids = [int(i) for i in ids]
    pieces: list[str] = []
    prefix, read = 0, 0

    def decode(part: list[int]) -> str:
        return tokenizer.decode(part, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    for i in range(len(ids)):
        before = decode(ids[prefix:read])
        after = decode(ids[prefix : i + 1])
        last = i == len(ids) - 1
        if len(after) > len(before) and (last or not after.endswith("\ufffd")):
            pieces.append(after[len(before) :])
            prefix, read = read, i + 1
        else:
            pieces.append("")
    return pieces


def _question_text(prompt: Any) -> str:
    if isinstance(prompt, str):
        return prompt
    texts = []
    for message in prompt:
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
        else:
            texts.extend(p.get("text", "") for p in content if p.get("type") == "text")
    return "\n".join(texts)


def _as_messages(prompt: Any, num_images: int, where: str) -> list[dict[str, Any]]:
    """A TRL conversational prompt; a plain string becomes one user turn, images first."""
    if isinstance(prompt, str):
        return [
            {
                "role": "user",
                "content": [{"type": "image"}] * num_images + [{"type": "text", "text": prompt}],
            }
        ]
    if not isinstance(prompt, list | tuple) or not all(isinstance(m, dict) for m in prompt):
        raise ValueError(f"{where} must be a string or a list of chat messages (dicts).")
    return list(prompt)


def _tokenizer(processor: Any) -> Any:
    return getattr(processor, "tokenizer", processor)


def _response_ids(
    response: Any,
    tokenizer: Any,
    eos_id: int | None,
    append_eos: bool,
    banned: set[int],
    where: str,
) -> list[int]:
    if isinstance(response, str):
        if response == "":
            raise ValueError(f"{where} is empty; a response needs at least one token.")
        ids = tokenizer(response, add_special_tokens=False)["input_ids"]
        if append_eos and eos_id is not None and (not ids or ids[-1] != eos_id):
            ids = [*ids, eos_id]
    else:
        try:
            ids = [int(i) for i in response]
        except (TypeError, ValueError) as err:
            raise ValueError(f"{where} must be a string or a sequence of token ids.") from err
        if not ids:
            raise ValueError(f"{where} has no tokens; a response needs at least one token.")
    bad = sorted(set(ids) & banned)
    if bad:
        raise ValueError(
            f"{where} contains vision placeholder token id(s) {bad}; such a response cannot be "
            "re-scored with the image (the processor would count them as image slots)."
        )
    return ids


# --------------------------------------------------------------------------------------------
# forwards
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def token_logprobs_and_entropy(
    hidden: torch.Tensor,
    lm_head_weight: torch.Tensor,
    token_ids: torch.Tensor,
    mask: torch.Tensor,
    *,
    temperature: float = 1.0,
    chunk_size: int = 1024,
    lm_head_bias: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sampled-token log-probs and policy entropies from final hidden states, chunk by chunk.

    Args:
        hidden: [B, T, H] LM-head inputs (final norm applied) at the positions that predict
            ``token_ids``.
        lm_head_weight: [V, H]; ``lm_head_bias``: optional [V].
        token_ids: [B, T] long, the response tokens.
        mask: [B, T] bool, valid response tokens.
        temperature: logits are divided by it (the sampling temperature), > 0.
        chunk_size: valid tokens per chunk; the largest tensor is [chunk_size, V] float32.

    Returns:
        ``(logp, entropy)``, both [B, T] float32 and 0 at padding.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}.")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}.")
    valid = mask.bool()
    h = hidden[valid]
    ids = token_ids.to(hidden.device)[valid]
    logp = torch.zeros(h.shape[0], dtype=torch.float32, device=hidden.device)
    entropy = torch.zeros_like(logp)
    weight = lm_head_weight
    bias = None if lm_head_bias is None else lm_head_bias.to(weight.dtype)
    for start in range(0, h.shape[0], chunk_size):
        stop = start + chunk_size
        logits = F.linear(h[start:stop].to(weight.dtype), weight, bias).float() / temperature
        lse = torch.logsumexp(logits, dim=-1)
        logp[start:stop] = logits.gather(1, ids[start:stop, None]).squeeze(1) - lse
        probs = torch.softmax(logits, dim=-1)
        entropy[start:stop] = lse - (probs * logits).sum(-1)
    out_logp = torch.zeros(mask.shape, dtype=torch.float32, device=hidden.device)
    out_entropy = torch.zeros_like(out_logp)
    out_logp[valid] = logp
    out_entropy[valid] = entropy
    return out_logp, out_entropy


def _final_hidden(
    model: Any, inputs: dict[str, Any], num_tokens: int, head: torch.nn.Module, check: bool
) -> torch.Tensor:
    """[B, T, H] LM-head inputs at the T positions that predict the response tokens."""
    out = model(**inputs, output_hidden_states=True, logits_to_keep=1, use_cache=False)
    last = out.hidden_states[-1]
    if check:
        # hidden_states[-1] is the LM-head input for Qwen2/2.5/3-VL and SmolVLM; verify it once
        # per run so an architecture where it is not (pre-norm, soft-capping) fails loudly.
        ours = head(last[:, -1:].to(head.weight.dtype)).float()
        theirs = out.logits[:, -1:].float()
        scale = 1.0 + float(theirs.abs().max())
        tol = (
            1e-3 * scale
            if theirs.dtype == torch.float32 and head.weight.dtype == torch.float32
            else 3e-2 * scale
        )
        diff = float((ours - theirs).abs().max())
        if diff > tol:
            raise ValueError(
                f"the model's last hidden state does not reproduce its logits (max difference "
                f"{diff:.3g}); token scoring needs hidden_states[-1] to be the LM-head input."
            )
    # Position i predicts token i + 1, so the response's predictors end one before the last.
    return last[:, -num_tokens - 1 : -1]


def _batches(indices: list[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(indices), size):
        yield indices[start : start + size]


def _homogeneous_batches(counts: Sequence[int], size: int) -> list[list[int]]:
    """Batches of indices that either all have images or all have none (processors need it)."""
    with_images = [i for i, c in enumerate(counts) if c > 0]
    without = [i for i, c in enumerate(counts) if c == 0]
    return [*_batches(with_images, size), *_batches(without, size)]


def _progress(iterable: Any, total: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="batch")


class _LeftPadding:
    """Temporarily pad prompts on the left, as TRL does (restored afterwards)."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self.previous = getattr(tokenizer, "padding_side", None)

    def __enter__(self) -> None:
        if self.previous is not None:
            self.tokenizer.padding_side = "left"

    def __exit__(self, *exc: object) -> None:
        if self.previous is not None:
            self.tokenizer.padding_side = self.previous


def _check_inputs(prompts: Sequence[Any], images: Sequence[Any], n: int, name: str) -> list[list]:
    if len(prompts) != n:
        raise ValueError(f"prompts has {len(prompts)} entries but {name} has {n}.")
    if images is None:
        return [[] for _ in range(n)]
    if len(images) != n:
        raise ValueError(f"images has {len(images)} entries but {name} has {n}.")
    out = []
    for i, row in enumerate(images):
        row = [] if row is None else ([row] if isinstance(row, Image.Image) else list(row))
        for j, img in enumerate(row):
            if not isinstance(img, Image.Image):
                raise ValueError(f"images[{i}][{j}] is a {type(img).__name__}, not a PIL image.")
        out.append([img if img.mode == "RGB" else img.convert("RGB") for img in row])
    return out


# --------------------------------------------------------------------------------------------
# generation
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def generate_responses(
    model: Any,
    processor: Any,
    prompts: Sequence[Any],
    images: Sequence[Sequence[Image.Image]] | None,
    *,
    num_generations: int = 1,
    max_new_tokens: int = 256,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    seed: int = 0,
    batch_size: int = 8,
    progress: bool = True,
) -> list[list[int]]:
    """Sample ``num_generations`` responses per prompt with ``model.generate``.

    Vision placeholder ids are banned (a response holding one could not be re-scored) and
    sampling settings are passed explicitly so a checkpoint's ``generation_config.json`` does
    not leak in. Each batch is seeded from (seed, its first response), so a run repeats.

    Returns:
        Response token ids, prompt-major (prompt 0's samples first), each cut after its first
        EOS (kept, as in a training rollout) with padding removed.
    """
    from transformers import GenerationConfig

    from vppo.models import eos_token_ids, vision_layout

    if num_generations < 1:
        raise ValueError(f"num_generations must be at least 1, got {num_generations}.")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}.")
    if not temperature >= 0:
        raise ValueError(f"temperature must be >= 0 (0 is greedy), got {temperature}.")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}.")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0 (0 disables top-k), got {top_k}.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    row_images = _check_inputs(prompts, images, len(prompts), "prompts")
    tokenizer = _tokenizer(processor)
    eos = eos_token_ids(model, tokenizer)
    pad = tokenizer.pad_token_id
    if pad is None:
        pad = getattr(model.generation_config, "pad_token_id", None)
    pad = int(pad if pad is not None else eos[0])
    banned = vision_layout(processor, model.config).pad_token_ids_to_ban
    greedy = temperature == 0
    config = GenerationConfig(
        do_sample=not greedy,
        num_beams=1,
        max_new_tokens=max_new_tokens,
        temperature=1.0 if greedy else temperature,
        top_p=1.0 if greedy else top_p,
        top_k=0 if greedy else top_k,
        repetition_penalty=1.0,
        eos_token_id=eos,
        pad_token_id=pad,
        bad_words_ids=[[int(t)] for t in banned] or None,
    )
    device = next(model.parameters()).device
    requests = [(i, j) for i in range(len(prompts)) for j in range(num_generations)]
    counts = [len(row_images[i]) for i, _ in requests]
    batches = _homogeneous_batches(counts, batch_size)
    results: list[list[int] | None] = [None] * len(requests)
    with _LeftPadding(tokenizer):
        for batch in _progress(batches, len(batches), "generating", progress):
            rows = [requests[k][0] for k in batch]
            texts = [
                processor.apply_chat_template(
                    _as_messages(prompts[i], len(row_images[i]), f"prompts[{i}]"),
                    tokenize=False,
                    add_generation_prompt=True,
                )
                for i in rows
            ]
            nested = [row_images[i] for i in rows]
            inputs = processor(
                text=texts,
                images=nested if any(nested) else None,
                padding=True,
                return_tensors="pt",
            ).to(device)
            devices = [device] if device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(response_seed(seed, batch[0]))
                output = model.generate(**inputs, generation_config=config)
            completions = output[:, inputs["input_ids"].shape[1] :].tolist()
            for k, ids in zip(batch, completions, strict=True):
                cut = next((t + 1 for t, tok in enumerate(ids) if tok in eos), len(ids))
                results[k] = ids[:cut]
    return [r for r in results if r is not None]


# --------------------------------------------------------------------------------------------
# scoring
# --------------------------------------------------------------------------------------------

# A record's per-token score fields, in the order they are filled.
_SCORE_FIELDS = ("logp_real", "logp_perturbed", "dependency", "entropy")


def _check_options(estimator: str, perturbation: str, batch_size: int, clip: float) -> None:
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator is {estimator!r}; choose one of {', '.join(ESTIMATORS)}.")
    if perturbation not in PERTURBATIONS:
        raise ValueError(
            f"perturbation is {perturbation!r}; choose one of {', '.join(PERTURBATIONS)}."
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    if not clip > 0:
        raise ValueError(f"clip must be > 0, got {clip}.")


@dataclass
class _BatchInputs:
    """One batch laid out like TRL's, on the model's device.

    ``forward``: the model's keyword inputs with the real image (``input_ids`` /
    ``attention_mask`` [B, P + T], the processor's image tensors); ``completion`` [B, T] long,
    the response ids right-padded with the pad id; ``mask`` [B, T] bool, True at response
    tokens; ``images``: each row's images.
    """

    forward: dict[str, Any]
    completion: torch.Tensor
    mask: torch.Tensor
    images: list[list[Image.Image]]

    @property
    def width(self) -> int:
        """T, the longest response of the batch."""
        return self.completion.shape[1]


def _batch_inputs(
    processor: Any,
    messages: Sequence[list[dict[str, Any]]],
    images: Sequence[list[Image.Image]],
    response_ids: Sequence[list[int]],
    pad_id: int,
    device: torch.device,
) -> _BatchInputs:
    """Chat-templated prompts (left-padded by the processor), then the responses right-padded.

    The processor's per-token outputs (token type ids) are extended with zeros over the
    responses. The tokenizer must already pad on the left (:class:`_LeftPadding`).
    """
    texts = [
        processor.apply_chat_template(m, tokenize=False, add_generation_prompt=True)
        for m in messages
    ]
    inputs = processor(
        text=texts, images=list(images) if any(images) else None, padding=True, return_tensors="pt"
    )
    rows, t = len(response_ids), max(len(ids) for ids in response_ids)
    completion = torch.full((rows, t), pad_id, dtype=torch.long)
    completion_mask = torch.zeros(rows, t, dtype=torch.long)
    for row, ids in enumerate(response_ids):
        completion[row, : len(ids)] = torch.tensor(ids)
        completion_mask[row, : len(ids)] = 1
    forward = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
    forward["input_ids"] = torch.cat([inputs["input_ids"], completion], dim=1)
    forward["attention_mask"] = torch.cat([inputs["attention_mask"], completion_mask], dim=1)
    for key in _TOKEN_TYPE_KEYS:
        if key in forward:
            forward[key] = torch.cat([forward[key], torch.zeros_like(completion)], dim=1)
    forward = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in forward.items()}
    return _BatchInputs(
        forward, completion.to(device), completion_mask.bool().to(device), list(images)
    )


def _perturbed_pixels(
    inputs: _BatchInputs,
    indices: Sequence[int],
    vision: Any,
    processor: Any,
    *,
    perturbation: str,
    prob: float,
    seed: int,
    patch_size: int | None,
) -> torch.Tensor:
    """``pixel_values`` of I' for a batch with images, laid out like the real ones.

    Each response's slice (:func:`pixel_value_slices`) gets its own random mask, seeded by
    (seed, its index ``indices[row]``), so I' does not depend on how responses are batched.
    """
    forward = inputs.forward
    pixels = forward["pixel_values"]
    attention = forward.get("pixel_attention_mask")
    slices = pixel_value_slices(
        vision, [len(x) for x in inputs.images], forward.get("image_grid_thw")
    )
    image_processor = getattr(processor, "image_processor", None)
    parts = []
    for k, part, row_images in zip(indices, slices, inputs.images, strict=True):
        generator = torch.Generator().manual_seed(response_seed(seed, k))
        parts.append(
            perturb_pixel_values(
                pixels[part],
                vision,
                perturbation,
                prob,
                generator,
                None if attention is None else attention[part],
                patch_size=patch_size,
                images=[row_images],
                image_processor=image_processor,
            )
        )
    return torch.cat(parts, dim=0)


def _without_images(inputs: _BatchInputs, vision: Any, pad_id: int) -> dict[str, Any]:
    """The forward inputs of a batch with every vision token removed from its prompts.

    The prompts lose their vision token ids (``vision.pad_token_ids_to_ban``) and are left-padded
    again; the responses follow unchanged, so the last T positions still predict them. No image
    tensor is passed (the vision tower does not run); the token type ids follow the kept columns.
    """
    forward = inputs.forward
    width = forward["input_ids"].size(1) - inputs.width
    prompt_ids, prompt_mask = forward["input_ids"][:, :width], forward["attention_mask"][:, :width]
    positions = text_only_positions(prompt_ids, prompt_mask, vision.pad_token_ids_to_ban)
    out = {}
    for key, fill in (
        ("input_ids", pad_id),
        ("attention_mask", 0),
        *((k, 0) for k in _TOKEN_TYPE_KEYS),
    ):
        if key in forward:
            values = forward[key]
            prompt = take_positions(values[:, :width], positions, fill=fill)
            out[key] = torch.cat([prompt, values[:, width:]], dim=1)
    return out


def _perturbed_forward(
    inputs: _BatchInputs,
    indices: Sequence[int],
    vision: Any,
    processor: Any,
    pad_id: int,
    *,
    perturbation: str,
    prob: float,
    seed: int,
    patch_size: int | None,
) -> dict[str, Any]:
    """The forward inputs of a batch with images, against the uninformative image or no image."""
    if perturbation == NO_IMAGE:
        return _without_images(inputs, vision, pad_id)
    pixels = _perturbed_pixels(
        inputs,
        indices,
        vision,
        processor,
        perturbation=perturbation,
        prob=prob,
        seed=seed,
        patch_size=patch_size,
    )
    return {**inputs.forward, "pixel_values": pixels}


def _batch_scores(
    model: Any,
    head: torch.nn.Module,
    inputs: _BatchInputs,
    perturbed: dict[str, Any] | None,
    *,
    estimator: str,
    clip: float,
    temperature: float,
    chunk_size: int,
    check: bool,
) -> dict[str, torch.Tensor]:
    """[B, T] ``_SCORE_FIELDS`` of one batch, 0 at padding.

    The real-image forward gives log-probs and entropies; with ``perturbed`` (the forward
    inputs of :func:`_perturbed_forward`) a second forward gives the perturbed log-probs, and
    :func:`dependency_from_passes` the
    estimator's score from the two. Without (a text-only batch) the dependency is 0 and
    ``logp_perturbed`` is ``logp_real``. ``check``: verify the hidden states reproduce the logits.
    """
    bias = getattr(head, "bias", None)

    def scored_pass(forward: dict[str, Any], check: bool) -> tuple[torch.Tensor, ...]:
        hidden = _final_hidden(model, forward, inputs.width, head, check=check)
        logp, entropy = token_logprobs_and_entropy(
            hidden,
            head.weight,
            inputs.completion,
            inputs.mask,
            temperature=temperature,
            chunk_size=chunk_size,
            lm_head_bias=bias,
        )
        return hidden, logp, entropy

    hidden_real, logp_real, entropy = scored_pass(inputs.forward, check)
    if perturbed is None:
        logp_perturbed, dependency = logp_real, torch.zeros_like(logp_real)
    else:
        hidden_perturbed, logp_perturbed, _ = scored_pass(perturbed, False)
        dependency = dependency_from_passes(
            estimator,
            mask=inputs.mask,
            logp_real=logp_real,
            logp_perturbed=logp_perturbed,
            hidden_real=hidden_real,
            hidden_perturbed=hidden_perturbed,
            lm_head_weight=head.weight,
            lm_head_bias=bias,
            clip=clip,
            temperature=temperature,
            chunk_size=chunk_size,
        )
    return {
        "logp_real": logp_real,
        "logp_perturbed": logp_perturbed,
        "dependency": dependency,
        "entropy": entropy,
    }


def _response_values(
    scores: dict[str, torch.Tensor], lengths: Sequence[int]
) -> list[dict[str, list[float]]]:
    """Each row's ``_SCORE_FIELDS`` cut to its response length, as float lists."""
    return [
        {name: scores[name][row, :m].float().cpu().tolist() for name in _SCORE_FIELDS}
        for row, m in enumerate(lengths)
    ]


def _records(
    values: Sequence[dict[str, list[float]]],
    *,
    prompts: Sequence[Any],
    responses: Sequence[str | Sequence[int]],
    response_ids: Sequence[list[int]],
    num_images: Sequence[int],
    answers: Sequence[str | None] | None,
    rows: Sequence[int] | None,
    samples: Sequence[int] | None,
    tokenizer: Any,
) -> list[ResponseRecord]:
    """One :class:`ResponseRecord` per response, in input order, graded against ``answers``.

    ``values[k]``: response k's scores (:func:`_response_values`); a NaN/inf raises ValueError.
    """
    from vppo.rewards import score_accuracy

    records = []
    for k, ids in enumerate(response_ids):
        text = (
            responses[k]
            if isinstance(responses[k], str)
            else tokenizer.decode(ids, skip_special_tokens=True)
        )
        answer = None if answers is None or answers[k] is None else str(answers[k])
        correct = None if answer is None else bool(score_accuracy(text, answer) == 1.0)
        for name in _SCORE_FIELDS:
            if not all(math.isfinite(v) for v in values[k][name]):
                raise ValueError(f"response {k}: the model produced NaN/inf {name} values.")
        records.append(
            ResponseRecord(
                index=k,
                row=k if rows is None else int(rows[k]),
                sample=0 if samples is None else int(samples[k]),
                question=_question_text(prompts[k]),
                response=text,
                answer=answer,
                correct=correct,
                num_images=num_images[k],
                token_ids=list(ids),
                tokens=token_strings(tokenizer, ids),
                **values[k],
            )
        )
    return records


@torch.no_grad()
def score_responses(
    model: Any,
    processor: Any,
    prompts: Sequence[Any],
    images: Sequence[Sequence[Image.Image]] | None,
    responses: Sequence[str | Sequence[int]],
    *,
    estimator: str = "k3",
    perturbation: str = "blacken",
    prob: float = 0.5,
    seed: int = 0,
    batch_size: int = 4,
    clip: float = 10.0,
    temperature: float = 1.0,
    patch_size: int | None = None,
    kl_chunk_size: int = 1024,
    answers: Sequence[str | None] | None = None,
    rows: Sequence[int] | None = None,
    samples: Sequence[int] | None = None,
    append_eos: bool = True,
    progress: bool = True,
) -> list[ResponseRecord]:
    """Per-token visual dependency of given responses, with the model's own processor.

    One entry of ``prompts``/``images``/``responses`` per response (repeat a prompt for several
    responses). Each batch is laid out like TRL's: chat-templated prompt (left-padded) followed
    by the response (right-padded), with two no-grad forwards, the real image and I' (one
    random mask per response, seeded by (seed, response index), so results do not depend on
    ``batch_size``).

    Args:
        model, processor: a VLM and its processor (any architecture the trainer supports).
        prompts: TRL conversational prompts (lists of messages with ``{"type": "image"}`` parts)
            or plain question strings (images are placed first).
        images: PIL images per response (a list, possibly empty), or ``None`` for text only.
        responses: response text (tokenised without special tokens; the EOS token is appended
            when ``append_eos``, as a finished rollout ends with it) or token ids (used as is).
        estimator: ``"k3"`` (official, clamped to [0, clip]), ``"top1_drop"``, or the exact
            full-vocabulary ``"kl"`` / ``"jsd"`` (chunked; not clamped).
        perturbation, prob, patch_size: the uninformative image (see :func:`perturb_pixel_values`);
            ``"none"``: no image at all, the prompt with the image and its placeholder tokens
            removed (:func:`vppo.perception.remove_image_tokens`; a shorter forward without the
            vision tower; ``prob``, ``seed`` and ``patch_size`` are unused).
        seed: seed of the perturbation masks.
        batch_size: responses per forward.
        clip: upper clamp of the sampled-token estimators.
        temperature: logits are divided by it (use the sampling temperature).
        kl_chunk_size: tokens per chunk for log-probs, entropies and the exact estimators.
        answers: optional ground truths; a response is correct when its last ``\\boxed{}``
            grades equal (MathRuler rules, :func:`vppo.rewards.score_accuracy`).
        rows, samples: optional dataset row and sample number of each response (for reports).
        append_eos: append the tokenizer's EOS to text responses that do not end with it.
        progress: show a tqdm progress bar.

    Returns:
        One :class:`ResponseRecord` per response, in input order. Responses without images get
        dependency 0 and ``logp_perturbed == logp_real`` (nothing to perturb).
    """
    from vppo.models import eos_token_ids, vision_layout

    _check_options(estimator, perturbation, batch_size, clip)
    n = len(responses)
    row_images = _check_inputs(prompts, images, n, "responses")
    for name, extra in (("answers", answers), ("rows", rows), ("samples", samples)):
        if extra is not None and len(extra) != n:
            raise ValueError(f"{name} has {len(extra)} entries but responses has {n}.")
    vision = vision_layout(processor, model.config)
    tokenizer = _tokenizer(processor)
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = eos_token_ids(model, tokenizer)[0]
    banned = set(int(i) for i in vision.pad_token_ids_to_ban)
    response_ids = [
        _response_ids(r, tokenizer, tokenizer.eos_token_id, append_eos, banned, f"response {k}")
        for k, r in enumerate(responses)
    ]
    messages = [_as_messages(p, len(row_images[k]), f"prompts[{k}]") for k, p in enumerate(prompts)]
    head = model.get_output_embeddings()
    device = next(model.parameters()).device
    batches = _homogeneous_batches([len(x) for x in row_images], batch_size)
    values: dict[int, dict[str, list[float]]] = {}
    with _LeftPadding(tokenizer):
        batches = _progress(batches, len(batches), f"scoring ({estimator})", progress)
        for number, batch in enumerate(batches):
            inputs = _batch_inputs(
                processor,
                [messages[k] for k in batch],
                [row_images[k] for k in batch],
                [response_ids[k] for k in batch],
                pad_id,
                device,
            )
            perturbed = None
            if any(inputs.images):
                perturbed = _perturbed_forward(
                    inputs,
                    batch,
                    vision,
                    processor,
                    pad_id,
                    perturbation=perturbation,
                    prob=prob,
                    seed=seed,
                    patch_size=patch_size,
                )
            scores = _batch_scores(
                model,
                head,
                inputs,
                perturbed,
                estimator=estimator,
                clip=clip,
                temperature=temperature,
                chunk_size=kl_chunk_size,
                check=number == 0,
            )
            lengths = [len(response_ids[k]) for k in batch]
            values.update(zip(batch, _response_values(scores, lengths), strict=True))
    return _records(
        [values[k] for k in range(n)],
        prompts=prompts,
        responses=responses,
        response_ids=response_ids,
        num_images=[len(x) for x in row_images],
        answers=answers,
        rows=rows,
        samples=samples,
        tokenizer=tokenizer,
    )
