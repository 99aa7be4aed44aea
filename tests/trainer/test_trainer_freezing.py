"""freeze_vision_tower / freeze_projector: the chosen parts keep their weights through training."""

from __future__ import annotations

import pytest
import torch

from vppo.trainer.freezing import freeze_vision_parts


@pytest.mark.parametrize("arch", ["qwen2_5_vl", "smolvlm"])
def test_freezing_finds_the_tower_and_the_projector(arch, tmp_path):
    from vppo.models import build_tiny_vlm

    model, _ = build_tiny_vlm(arch, tmp_path / "m")
    frozen = freeze_vision_parts(model, vision_tower=True, projector=False)
    assert frozen["vision_tower"] > 0 and frozen["projector"] == 0
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any(("merger" in n or "connector" in n) for n in trainable)
    assert not any(("visual" in n or "vision_model" in n) and "merger" not in n for n in trainable)
    assert any("lm_head" in n for n in trainable)
    assert freeze_vision_parts(model, vision_tower=False, projector=True)["projector"] > 0


def test_freezing_a_text_model_says_so():
    with pytest.raises(ValueError, match="freeze_vision_tower: no parameter"):
        freeze_vision_parts(torch.nn.Linear(2, 2), vision_tower=True, projector=False)


@pytest.mark.slow
def test_frozen_vision_tower_keeps_its_weights_through_a_step(tmp_path):
    from vppo.trainer.cli import build_trainer, parse

    script_args, config, model_args = parse(
        [
            "--config",
            "tiny_vppo",
            "--output_dir",
            str(tmp_path / "run"),
            "--max_steps",
            "1",
            "--save_strategy",
            "no",
            "--freeze_vision_tower",
            "true",
            "--max_completion_length",
            "8",
            "--per_device_train_batch_size",
            "4",
            "--num_generations",
            "2",
            "--dynamic_sampling",
            "false",
        ]
    )
    trainer = build_trainer(script_args, config, model_args)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    after = dict(trainer.model.named_parameters())
    tower = [n for n in before if "visual" in n and "merger" not in n]
    assert tower and all(torch.equal(before[n], after[n]) for n in tower)
    assert any(not torch.equal(before[n], after[n]) for n in before if n not in tower)
