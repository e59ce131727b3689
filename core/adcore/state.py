"""Named modules' state as one flat mapping of tensors, the form model files and checkpoints store.

A trained detector keeps several networks (DRÆM's two sub-networks, RD's OCBE
and decoder); safetensors stores one flat name -> tensor mapping. The key of
each value is ``<prefix><module name>.<state_dict key>``, so one file holds
them all and each module gets back exactly its own part.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

__all__ = ["load_modules_state", "modules_state"]


def modules_state(modules: Mapping[str, nn.Module], prefix: str = "") -> dict[str, torch.Tensor]:
    """The state dicts of ``modules`` as one mapping keyed ``<prefix><name>.<key>``."""
    return {f"{prefix}{name}.{key}": value for name, module in modules.items()
            for key, value in module.state_dict().items()}


def load_modules_state(modules: Mapping[str, nn.Module], tensors: Mapping[str, torch.Tensor],
                       prefix: str = "") -> None:
    """Load each module's part of ``tensors`` (strictly: a missing or extra key is an error)."""
    for name, module in modules.items():
        start = f"{prefix}{name}."
        module.load_state_dict({k[len(start):]: v for k, v in tensors.items() if k.startswith(start)})
