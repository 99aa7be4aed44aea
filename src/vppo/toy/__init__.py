"""The CPU world: a tiny warm-started VLM trained with VPPO on the synthetic visual task.

- `vppo.toy.warmstart`: the supervised warm start that made the shipped checkpoints
  (``python -m vppo.warmstart``).
- `vppo.toy.demo`: `vppo demo`, VPPO visibly improving that model on a laptop CPU.
- `vppo.toy.compare`: `vppo compare`, GRPO vs DAPO vs VPPO (and ablations) over several seeds;
  a package by job (`stats`, `runner`, `report`, `cli`).

The top of the stack: it drives the trainer, the evaluation and the analysis layers, and nothing
below imports it (tests/test_layering.py). The task itself is training data
(`vppo.data.synthetic`): `vppo train --dataset_name synthetic` and `tiny:<arch>` models need it.
"""
