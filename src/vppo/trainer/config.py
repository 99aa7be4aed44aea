"""`VPPOConfig`: TRL's `GRPOConfig` plus every VPPO knob, with defaults of the official 7B recipe."""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import GRPOConfig

from vppo.algorithm import PERCEPTION_KL_ESTIMATORS, TOKEN_SELECTIONS
from vppo.perception import DEPENDENCY_ESTIMATORS, PERTURBATIONS

TAS_SCOPES = ("global", "local", "group")
NLL_LOSS_TYPES = ("dapo", "bnpo", "grpo", "dr_grpo")


@dataclass
class VPPOConfig(GRPOConfig):
    r"""Configuration for [`VPPOTrainer`]: GRPOConfig plus the VPPO algorithm (arXiv 2510.09285).

    The defaults reproduce the official Qwen2.5-VL-7B recipe: k3 token dependency on patch-blackened
    images (p = 0.5), top-40% token gradient filtering (TGF), dynamic trajectory advantage shaping
    (TAS, β_min = 0.9), the sampled-token NLL term (0.06), DAPO clipping (0.2 / 0.28), token-mean
    loss, no KL, and dynamic sampling. Switch VPPO off with `token_selection="none"` and
    `use_tas=False` to get the DAPO baseline through the same code path.
    """

    # --- token visual dependency -------------------------------------------------------------
    dependency_estimator: str = field(
        default="k3",
        metadata={
            "help": "How to score each token's visual dependency: 'k3' (official: sampled-token "
            "estimator exp(d)-d-1 of KL(π_I‖π_I'), clamped), 'kl' (the paper's exact full-vocabulary "
            "KL, chunked), 'jsd' (exact Jensen-Shannon), 'top1_drop' (drop in the sampled token's "
            "probability).",
            "choices": list(DEPENDENCY_ESTIMATORS),
        },
    )
    dependency_clip: float = field(
        default=10.0, metadata={"help": "Upper clamp of per-token k3 scores (official: 10)."}
    )
    kl_chunk_size: int = field(
        default=1024,
        metadata={
            "help": "Tokens per chunk for the exact 'kl'/'jsd' estimators (peak memory ∝ chunk × vocab)."
        },
    )
    perturbation: str = field(
        default="blacken",
        metadata={
            "help": "The uninformative image I': 'blacken' (black processor patches in pixel_values; "
            "exact and cheap), 'blacken_image' (official: black 14-px squares of the PIL image, then "
            "re-run the image processor), 'noise' (Gaussian σ=189), 'blur' (radius 6), 'grey' (solid 128), "
            "'none' (no image: the image and its placeholder tokens removed from the prompt, a shorter "
            "forward without the vision tower).",
            "choices": list(PERTURBATIONS),
        },
    )
    perturbation_prob: float = field(
        default=0.5, metadata={"help": "Probability that each patch is blackened (official: 0.5)."}
    )
    perturbation_patch_size: int | None = field(
        default=None,
        metadata={
            "help": "Patch side in pixels for blackening. None: the processor's ViT patch size "
            "(14 for Qwen2/2.5-VL, 16 for Qwen3-VL); the official code uses 14 everywhere."
        },
    )
    perturbation_seed: int = field(
        default=0,
        metadata={
            "help": "Seed of the perturbation masks; combined with the step and process index."
        },
    )

    # --- TGF ----------------------------------------------------------------------------------
    token_selection: str = field(
        default="topk",
        metadata={
            "help": "Which tokens receive policy gradient: 'topk' (TGF: top `token_ratio` by "
            "dependency), 'soft' (sigmoid weights with mean `token_ratio`, paper App. I), 'entropy' "
            "(top by entropy), 'random', 'union' (dependency OR entropy, as the official code), "
            "'none' (all tokens).",
            "choices": list(TOKEN_SELECTIONS),
        },
    )
    token_ratio: float = field(
        default=0.4,
        metadata={"help": "k: fraction of each response's tokens kept by TGF (official 0.4)."},
    )
    entropy_ratio: float | None = field(
        default=None,
        metadata={
            "help": "Fraction kept by the entropy mask in 'union' selection; None: `token_ratio`."
        },
    )

    # --- TAS ----------------------------------------------------------------------------------
    use_tas: bool = field(
        default=True,
        metadata={"help": "Scale each response's advantage by α from its mean dependency (TAS)."},
    )
    tas_beta_min: float = field(
        default=0.9, metadata={"help": "β_min, the smallest advantage scale."}
    )
    tas_beta_max: str = field(
        default="dynamic",
        metadata={
            "help": "β_max: 'dynamic' (β_min + (1-β_min)/mean(u), so mean α = 1, as the official code) "
            "or a number greater than β_min."
        },
    )
    tas_scope: str = field(
        default="global",
        metadata={
            "help": "Set over which TAS min/max/mean are taken: 'global' (the whole generation batch, "
            "gathered across processes; independent of GPU count), 'local' (this process's batch, "
            "closest to the official per-GPU statistics), 'group' (each prompt's G responses).",
            "choices": list(TAS_SCOPES),
        },
    )

    # --- PAPO (arXiv 2507.06448): implicit perception loss -----------------------------------
    papo_coef: float = field(
        default=0.0,
        metadata={
            "help": "γ of PAPO's implicit perception loss: the loss gains -γ·KL(π_θ(·|I) ‖ "
            "π_θold(·|I_mask)), a sampled-token estimate on the masked image of `perturbation` "
            "(official: blacken_image, prob 0.6, patch 14). 0 disables PAPO; official 0.02 "
            "(PAPO_G) and 0.01 (PAPO_D)."
        },
    )
    papo_kl_estimator: str = field(
        default="k3",
        metadata={
            "help": "Per-token estimator of PAPO's KL: 'k3' (official low_var_kl, exp(x)-x-1 "
            "with x = ℓ̃-ℓ clamped to ±20, result to ±10), 'kl' (ℓ-ℓ̃), 'mse' (½(ℓ-ℓ̃)²), 'abs' "
            "(|ℓ-ℓ̃|).",
            "choices": list(PERCEPTION_KL_ESTIMATORS),
        },
    )
    papo_kl_clip: float | None = field(
        default=None,
        metadata={
            "help": "Clamp each token's PAPO KL to [0, papo_kl_clip]; None: off, as in every "
            "official script (their optional clip is 0.2)."
        },
    )
    papo_entropy_coef: float = field(
        default=0.0,
        metadata={
            "help": "η_ori of PAPO's double entropy loss: adds η_ori·mean(-log π_θ(o_t|I)) over "
            "the response tokens, lowering the real-image entropy (official 7B PAPO_G 0.05, PAPO_D "
            "0.03; 0 disables)."
        },
    )
    papo_masked_entropy_coef: float = field(
        default=0.0,
        metadata={
            "help": "η_aug of PAPO's double entropy loss: adds η_aug·mean(-log π(o_t|I_mask)); "
            "without papo_masked_grad it has no gradient (official 7B PAPO_G 0.05, PAPO_D 0.03)."
        },
    )
    papo_masked_grad: bool = field(
        default=False,
        metadata={
            "help": "PAPO's masked-image log-probs from a forward with gradient in every update "
            "micro-batch (official RECOMPUTE_AUG_LOG_PROBS, off there). False: θ_old's, no grad."
        },
    )

    # --- DAPO pieces shared by every algorithm --------------------------------------------------
    nll_coef: float = field(
        default=0.06,
        metadata={
            "help": "Coefficient of the sampled-token NLL term the official code calls 'entropy "
            "penalty' (0.06 for 7B, 0.12 for Qwen3-VL-8B; 0 disables). Applied to all tokens."
        },
    )
    dynamic_sampling: bool = field(
        default=True,
        metadata={
            "help": "Drop groups whose mean accuracy is ≤ low or ≥ high and generate again (DAPO)."
        },
    )
    dynamic_sampling_low: float = field(
        default=0.01, metadata={"help": "Drop groups with accuracy ≤ this."}
    )
    dynamic_sampling_high: float = field(
        default=0.99, metadata={"help": "Drop groups with accuracy ≥ this."}
    )
    dynamic_sampling_max_rounds: int = field(
        default=4,
        metadata={
            "help": "Extra generation rounds per batch to refill dropped groups (the official code "
            "loops forever); after the bound, the batch is filled with dropped groups and a warning."
        },
    )
    dynamic_sampling_reward: str = field(
        default="accuracy",
        metadata={
            "help": "Name of the reward function whose group mean is filtered, or 'total' (the "
            "weighted sum of all rewards). `vppo train` rejects a name that is neither; only the "
            "default 'accuracy' falls back to the total when no reward has that name."
        },
    )

    # --- which parts of the VLM train -----------------------------------------------------------
    freeze_vision_tower: bool = field(
        default=False,
        metadata={
            "help": "Keep the vision encoder fixed (default False: trainable, as in the official run)."
        },
    )
    freeze_projector: bool = field(
        default=False,
        metadata={
            "help": "Keep the vision-to-language projector (Qwen-VL merger, SmolVLM connector) fixed."
        },
    )

    save_mid_rollout: bool = field(
        default=False,
        metadata={
            "help": "Allow a save_steps that is not a multiple of the optimizer steps per rollout "
            "(steps_per_generation × num_iterations / gradient_accumulation_steps; 3 in the 7B/32B "
            "recipes). TRL keeps the rollout being trained on in memory only, so a run resumed from a "
            "mid-rollout checkpoint starts a fresh rollout there and no longer equals an uninterrupted run."
        },
    )

    # --- overridden GRPOConfig defaults (official 7B recipe) ------------------------------------
    epsilon_high: float | None = field(
        default=0.28, metadata={"help": "Upper clip ε (clip-higher; official 0.28)."}
    )
    top_p: float = field(default=0.99, metadata={"help": "Top-p for rollouts (official 0.99)."})
    max_completion_length: int | None = field(
        default=2048, metadata={"help": "Maximum generated tokens (official 7B: 2048)."}
    )

    def __post_init__(self):
        # transformers 5 renamed gradient_checkpointing(_kwargs) to activation_checkpointing(_kwargs) and
        # warns on the old names, which TRL's own default and our recipes use: here both names are one.
        for old, new in (
            ("gradient_checkpointing", "activation_checkpointing"),
            ("gradient_checkpointing_kwargs", "activation_checkpointing_kwargs"),
        ):
            if getattr(self, new) is None and getattr(self, old) is not None:
                setattr(self, new, getattr(self, old))
        super().__post_init__()

        if self.dependency_estimator not in DEPENDENCY_ESTIMATORS:
            raise ValueError(
                f"VPPOConfig.dependency_estimator is {self.dependency_estimator!r}; "
                f"choose one of {', '.join(DEPENDENCY_ESTIMATORS)}."
            )
        if self.perturbation not in PERTURBATIONS:
            raise ValueError(
                f"VPPOConfig.perturbation is {self.perturbation!r}; "
                f"choose one of {', '.join(PERTURBATIONS)}."
            )
        if self.token_selection not in TOKEN_SELECTIONS:
            raise ValueError(
                f"VPPOConfig.token_selection is {self.token_selection!r}; "
                f"choose one of {', '.join(TOKEN_SELECTIONS)}."
            )
        if self.tas_scope not in TAS_SCOPES:
            raise ValueError(
                f"VPPOConfig.tas_scope is {self.tas_scope!r}; choose one of {', '.join(TAS_SCOPES)}."
            )
        if not self.dependency_clip > 0:
            raise ValueError(
                f"VPPOConfig.dependency_clip must be positive, got {self.dependency_clip}."
            )
        if not self.kl_chunk_size >= 1:
            raise ValueError(
                f"VPPOConfig.kl_chunk_size must be at least 1, got {self.kl_chunk_size}."
            )
        if not 0.0 <= self.perturbation_prob <= 1.0:
            raise ValueError(
                f"VPPOConfig.perturbation_prob must be in [0, 1], got {self.perturbation_prob}."
            )
        if not (self.perturbation_patch_size is None or self.perturbation_patch_size >= 1):
            raise ValueError(
                "VPPOConfig.perturbation_patch_size must be a positive integer, "
                f"got {self.perturbation_patch_size}."
            )
        if not 0.0 < self.token_ratio <= 1.0:
            raise ValueError(f"VPPOConfig.token_ratio must be in (0, 1], got {self.token_ratio}.")
        if not (self.entropy_ratio is None or 0.0 < self.entropy_ratio <= 1.0):
            raise ValueError(
                f"VPPOConfig.entropy_ratio must be in (0, 1], got {self.entropy_ratio}."
            )
        # β_min is TAS's smallest advantage scale; 'dynamic' β_max makes the mean scale 1, which
        # needs β_min ≤ 1 (vppo.algorithm.tas_scale refuses more).
        if not 0.0 < self.tas_beta_min <= 1.0:
            raise ValueError(f"VPPOConfig.tas_beta_min must be in (0, 1], got {self.tas_beta_min}.")
        # A str field, so that the CLI takes 'dynamic' or a number; a YAML recipe may give a float.
        self.tas_beta_max = str(self.tas_beta_max)
        if self.tas_beta_max != "dynamic":
            try:
                beta_max = float(self.tas_beta_max)
            except ValueError:
                beta_max = float("nan")  # fails the comparison below, with the same message
            if not beta_max > self.tas_beta_min:
                raise ValueError(
                    "VPPOConfig.tas_beta_max must be 'dynamic' or a number greater than "
                    f"tas_beta_min={self.tas_beta_min}, got {self.tas_beta_max!r}."
                )
        for name in ("papo_coef", "papo_entropy_coef", "papo_masked_entropy_coef"):
            if not getattr(self, name) >= 0:
                raise ValueError(
                    f"VPPOConfig.{name} must be non-negative, got {getattr(self, name)}."
                )
        if self.papo_kl_estimator not in PERCEPTION_KL_ESTIMATORS:
            raise ValueError(
                f"VPPOConfig.papo_kl_estimator is {self.papo_kl_estimator!r}; "
                f"choose one of {', '.join(PERCEPTION_KL_ESTIMATORS)}."
            )
        if not (self.papo_kl_clip is None or self.papo_kl_clip > 0):
            raise ValueError(
                "VPPOConfig.papo_kl_clip must be positive (or None to disable), "
                f"got {self.papo_kl_clip}."
            )
        if self.papo_masked_grad and not self.papo_reads_masked:
            raise ValueError(
                "VPPOConfig.papo_masked_grad needs a PAPO term that reads the masked image "
                "(papo_coef > 0 or papo_masked_entropy_coef > 0); with both 0 it would change nothing."
            )
        # The PAPO term is normalised like the policy loss, as the NLL term (VPPOTrainer._loss_mean).
        if self.uses_papo and self.loss_type not in NLL_LOSS_TYPES:
            raise ValueError(
                "VPPOConfig.papo_coef, papo_entropy_coef and papo_masked_entropy_coef are only "
                f"supported with loss_type in {', '.join(NLL_LOSS_TYPES)}, got {self.loss_type!r}."
            )
        if not self.nll_coef >= 0:
            raise ValueError(f"VPPOConfig.nll_coef must be non-negative, got {self.nll_coef}.")
        # The NLL term is normalised the way TRL normalises the policy loss (VPPOTrainer._nll_term),
        # which is written for these loss types only.
        if not (self.nll_coef == 0 or self.loss_type in NLL_LOSS_TYPES):
            raise ValueError(
                "VPPOConfig.nll_coef is only supported with loss_type in "
                f"{', '.join(NLL_LOSS_TYPES)}, got {self.loss_type!r}."
            )
        # Accuracies are in [0, 1]; with low >= high every group would be dropped, and
        # dynamic sampling would fill every batch with dropped groups.
        if not 0.0 <= self.dynamic_sampling_low < self.dynamic_sampling_high <= 1.0:
            raise ValueError(
                "VPPOConfig.dynamic_sampling_low and dynamic_sampling_high must satisfy "
                f"0 ≤ low < high ≤ 1, got {self.dynamic_sampling_low} and {self.dynamic_sampling_high}."
            )
        # Groups are dropped and refilled per process: a process's rows must be whole groups.
        local_rows = self.per_device_train_batch_size * self.steps_per_generation
        if self.dynamic_sampling and local_rows % self.num_generations != 0:
            raise ValueError(
                f"VPPOConfig.dynamic_sampling needs each process's generation batch ({local_rows} rows = "
                "per_device_train_batch_size × steps_per_generation) to hold whole groups of "
                f"num_generations={self.num_generations}; change one of them or set dynamic_sampling=False."
            )
        if not self.dynamic_sampling_max_rounds >= 0:
            raise ValueError(
                "VPPOConfig.dynamic_sampling_max_rounds must be non-negative, "
                f"got {self.dynamic_sampling_max_rounds}."
            )
        # -1 is transformers' "unset" (train num_train_epochs); other values <= 0 were silently
        # read as "unset" too, so --max_steps -3 trained for 3 epochs.
        if not (self.max_steps > 0 or self.max_steps == -1):
            raise ValueError(
                "VPPOConfig.max_steps must be a positive number of optimizer steps, or -1 (the default) "
                f"to train for num_train_epochs; got {self.max_steps}."
            )
        # A checkpoint between two updates of one rollout cannot be resumed exactly (TRL does not save
        # the buffered rollout): save at rollout boundaries unless asked otherwise.
        per_rollout = self.updates_per_rollout
        if (
            self.save_strategy == "steps"
            and not self.save_mid_rollout
            and self.save_steps >= 1
            and per_rollout > 1
            and self.save_steps % per_rollout != 0
        ):
            raise ValueError(
                f"VPPOConfig.save_steps is {self.save_steps:g}, which saves mid-rollout: one rollout is "
                f"{per_rollout:g} optimizer steps here, so use a multiple of {per_rollout:g} (e.g. "
                f"{5 * per_rollout:g} = every 5 rollouts, as the official run), or set save_mid_rollout=True "
                "(a resumed run then starts a fresh rollout)."
            )

    @property
    def updates_per_rollout(self) -> float:
        """Optimizer steps trained on one generation batch (rollout)."""
        return self.steps_per_generation * self.num_iterations / self.gradient_accumulation_steps

    @property
    def tas_beta_max_value(self) -> float | str:
        """`tas_beta_max` as the algorithm layer takes it: the string 'dynamic' or a float."""
        return "dynamic" if self.tas_beta_max == "dynamic" else float(self.tas_beta_max)

    @property
    def uses_papo(self) -> bool:
        """Whether the PAPO term is on (any of its three coefficients positive)."""
        return self.papo_coef > 0 or self.papo_entropy_coef > 0 or self.papo_masked_entropy_coef > 0

    @property
    def papo_reads_masked(self) -> bool:
        """Whether PAPO's term reads masked-image log-probs (its KL or its masked entropy is on)."""
        return self.papo_coef > 0 or self.papo_masked_entropy_coef > 0

    @property
    def needs_perturbation(self) -> bool:
        """Whether a step builds the perturbed images: for the no-grad perturbed pass, or for
        PAPO's masked forward with gradient in the update (`papo_masked_grad`)."""
        return self.needs_dependency or self.papo_reads_masked

    @property
    def needs_perturbed_pass(self) -> bool:
        """Whether a step runs the no-grad perturbed-image pass: for VPPO's dependency, or for
        θ_old's masked-image log-probs of PAPO's perception KL or masked entropy (one pass serves
        both; with `papo_masked_grad` PAPO's come from the update's own forward instead)."""
        return self.needs_dependency or (self.papo_reads_masked and not self.papo_masked_grad)

    @property
    def needs_dependency(self) -> bool:
        """Whether a step needs the perturbed forward pass at all (False for DAPO/GRPO baselines)."""
        return self.use_tas or TOKEN_SELECTIONS[self.token_selection].needs_dependency
