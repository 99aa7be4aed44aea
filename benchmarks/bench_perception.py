"""Side-by-side costs of the perception layer's two design choices, measured in one run.

1. Exact KL: `full_kl_dependency` (chunked over tokens) vs a naive full-softmax KL over [N, V]
   logits: wall time and peak bytes of the largest tensor (CPU; on CUDA also peak allocated memory).
2. Perturbation: blackening rows of the processed Qwen2.5-VL `pixel_values` vs the official route
   (blacken 14-px squares of the PIL image, then run the image processor again).

    .venv/bin/python benchmarks/bench_perception.py [--tokens 2048] [--vocab 151936] [--hidden 1024]

Prints one table per comparison with the ratio naive / chunked and PIL / pixel-space.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
from PIL import Image
from torch.overrides import TorchFunctionMode

from vppo.perception import blacken_image_patches, blacken_patches, full_kl_dependency


class LargestTensor(TorchFunctionMode):
    """Records the element count of the largest tensor any torch function returns."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for value in out if isinstance(out, tuple) else (out,):
            if isinstance(value, torch.Tensor):
                self.largest = max(self.largest, value.numel() * value.element_size())
        return out


def naive_kl(h_real, h_aug, weight, mask):
    logp = torch.log_softmax(h_real[mask] @ weight.T, dim=-1)
    logq = torch.log_softmax(h_aug[mask] @ weight.T, dim=-1)
    return (logp.exp() * (logp - logq)).sum(-1)


def timed(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_kl(tokens: int, vocab: int, hidden: int, chunk: int, repeats: int) -> None:
    generator = torch.Generator().manual_seed(0)
    h_real = torch.randn(1, tokens, hidden, generator=generator)
    h_aug = h_real + 0.1 * torch.randn(1, tokens, hidden, generator=generator)
    weight = torch.randn(vocab, hidden, generator=generator) / hidden**0.5
    mask = torch.ones(1, tokens, dtype=torch.bool)
    rows = []
    for name, fn in (
        ("naive [N, V] softmax", lambda: naive_kl(h_real, h_aug, weight, mask)),
        (
            f"chunked ({chunk} tokens)",
            lambda: full_kl_dependency(h_real, h_aug, weight, mask, chunk_size=chunk),
        ),
    ):
        with torch.no_grad():
            probe = LargestTensor()
            with probe:
                fn()
            seconds = timed(lambda fn=fn: fn(), repeats)
        rows.append((name, seconds, probe.largest))
    exact = naive_kl(h_real, h_aug, weight, mask)
    chunked = full_kl_dependency(h_real, h_aug, weight, mask, chunk_size=chunk)[mask]
    print(
        f"\nExact KL over the vocabulary: T={tokens}, V={vocab}, H={hidden}; max |diff| = "
        f"{(exact - chunked).abs().max().item():.2e}"
    )
    print(f"{'method':<24}{'median s':>10}{'largest tensor':>18}")
    for name, seconds, largest in rows:
        print(f"{name:<24}{seconds:>10.3f}{largest / 2**20:>15.1f} MB")
    (_, t_naive, m_naive), (_, t_chunk, m_chunk) = rows
    print(
        f"ratio naive / chunked: time {t_naive / t_chunk:.2f}x, largest tensor {m_naive / m_chunk:.1f}x"
    )


def bench_perturbation(repeats: int) -> None:
    from transformers import Qwen2VLImageProcessorPil  # Qwen2/2.5-VL's processor (PIL backend)

    processor = Qwen2VLImageProcessorPil(
        patch_size=14,
        temporal_patch_size=2,
        merge_size=2,
        min_pixels=448 * 448,
        max_pixels=448 * 448,
        image_mean=[0.48145466, 0.4578275, 0.40821073],
        image_std=[0.26862954, 0.26130258, 0.27577711],
    )
    images = [Image.new("RGB", (448, 448), (30 * i % 255, 120, 200)) for i in range(8)]
    processed = processor(images=images, return_tensors="pt")
    pixel_values = processed["pixel_values"]
    mean, std = tuple(processor.image_mean), tuple(processor.image_std)

    def pixel_space():
        return blacken_patches(
            pixel_values,
            "qwen_flat",
            mean,
            std,
            prob=0.5,
            generator=torch.Generator().manual_seed(0),
        )

    def image_space():
        generator = torch.Generator().manual_seed(0)
        perturbed = [blacken_image_patches(img, 14, 0.5, generator) for img in images]
        return processor(images=perturbed, return_tensors="pt")["pixel_values"]

    t_pixel = timed(pixel_space, repeats)
    t_image = timed(image_space, repeats)
    print(f"\nPerturbation of 8 images of 448x448 ({pixel_values.shape[0]} patch rows):")
    print(f"{'method':<40}{'median s':>10}")
    print(f"{'pixel_values rows (vppo default)':<40}{t_pixel:>10.4f}")
    print(f"{'PIL squares + image processor (official)':<40}{t_image:>10.4f}")
    print(f"ratio official / pixel-space: {t_image / t_pixel:.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--vocab", type=int, default=151936)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--chunk", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(
        f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}, python {platform.python_version()}"
    )
    bench_kl(args.tokens, args.vocab, args.hidden, args.chunk, args.repeats)
    bench_perturbation(args.repeats)


if __name__ == "__main__":
    main()
