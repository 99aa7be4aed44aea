"""The TRL layer: `VPPOConfig(GRPOConfig)` and `VPPOTrainer(GRPOTrainer)`; the only place that knows TRL."""

from vppo.trainer.config import VPPOConfig
from vppo.trainer.trainer import VPPOTrainer

__all__ = ["VPPOConfig", "VPPOTrainer"]
