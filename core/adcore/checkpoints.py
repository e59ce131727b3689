"""Training checkpoints, so an interrupted training resumes at its last finished epoch.

The runner names a checkpoint :class:`Place` for each fit and passes it to
``Detector.fit(images, checkpoint=place)``, which hands it to the detector's
:func:`adcore.training.train`; a fit without one never reads or writes any.
``train`` saves the modules, optimisers and random generators a detector hands
it after every epoch and, when it finds a checkpoint of the same fit (same
fingerprint), restores them and goes on.
Tensors go to safetensors and everything else to JSON, so loading a checkpoint
executes no code, like loading a model. A checkpoint is not a model: the
runner deletes it once the model is written.

Each save replaces the checkpoint folder atomically (:mod:`adcore.fs`); the
folder holds nothing but ``state.safetensors`` and ``state.json``, which is
what marks it as adcore's, so only such a folder is ever replaced or removed.
A checkpoint that cannot be restored is discarded with a one-line warning and
training starts over: it never blocks a command.
"""

from __future__ import annotations

import copy
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Union

import attrs
import numpy as np
import torch
from torch import nn

from adcore import fs
from adcore.state import load_modules_state, modules_state

#: Public: the place a caller passes to ``Detector.fit(images, checkpoint=...)``; the rest serves
#: the core's training loop and runner.
__all__ = ["Place"]

TENSORS_FILE = "state.safetensors"
META_FILE = "state.json"
FORMAT = "adcore-checkpoint"

Saved = Union[nn.Module, torch.optim.Optimizer]
Rng = Union[np.random.Generator, torch.Generator]


@attrs.define
class Place:
    """Where a fit keeps its checkpoint, what identifies that fit, and where it resumed (set by :func:`load`)."""

    folder: Path = attrs.field(converter=Path)
    fingerprint: str
    resumed_from: int | None = None  # finished epochs restored from a checkpoint, if any


def remove(folder: Path) -> None:
    """Delete a checkpoint folder (after the model it was for has been written); never anything else."""
    fs.remove_folder(folder, KIND)


def save(place: Place, epoch: int, history: list[float], objects: Mapping[str, Saved],
         rngs: Mapping[str, Rng]) -> None:
    """Write the state after ``epoch`` finished epochs; the previous checkpoint is replaced atomically."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    meta: dict[str, Any] = {"format": FORMAT, "fingerprint": place.fingerprint, "epoch": epoch,
                            "history": history, "optimisers": {}, "numpy_rngs": {}}
    modules = {name: obj for name, obj in objects.items() if isinstance(obj, nn.Module)}
    tensors.update(modules_state(modules, prefix="module."))
    for name, obj in objects.items():
        if not isinstance(obj, nn.Module):
            state = obj.state_dict()
            scalars: dict[str, dict[str, Any]] = {}
            for index, slots in state["state"].items():
                for key, value in slots.items():
                    if isinstance(value, torch.Tensor):
                        tensors[f"optim.{name}.{index}.{key}"] = value
                    else:
                        scalars.setdefault(str(index), {})[key] = value
            meta["optimisers"][name] = {"param_groups": state["param_groups"], "scalars": scalars}
    for name, rng in rngs.items():
        if isinstance(rng, torch.Generator):
            tensors[f"rng.{name}"] = rng.get_state()
        else:
            meta["numpy_rngs"][name] = rng.bit_generator.state

    def write(folder: Path) -> None:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(folder / TENSORS_FILE))
        fs.write_json(folder / META_FILE, meta)

    fs.replace_folder(place.folder, write, KIND)


def load(place: Place, objects: Mapping[str, Saved], rngs: Mapping[str, Rng]) -> tuple[int, list[float]] | None:
    """Restore a checkpoint of this fit into ``objects`` and ``rngs``.

    Returns (finished epochs, loss history), or None when there is none. A
    checkpoint that cannot be restored (damaged, of another fit, or with tensors
    that do not fit the modules) is discarded with a one-line warning, and
    ``objects`` and ``rngs`` are left as they were, so training starts over.
    """
    if not (place.folder / META_FILE).is_file() and not (place.folder / TENSORS_FILE).is_file():
        return None
    originals = _snapshot(objects, rngs)
    try:
        return _restore(place, objects, rngs)
    except Exception as exc:  # noqa: BLE001 - any damage means: start over, never block the command
        _restore_snapshot(originals, objects, rngs)
        remove(place.folder)
        reason = " ".join(str(exc).split()) or type(exc).__name__
        print(f"Warning: {place.folder}: training checkpoint discarded ({reason[:300]}); training starts over",
              file=sys.stderr, flush=True)
        return None


def _restore(place: Place, objects: Mapping[str, Saved], rngs: Mapping[str, Rng]) -> tuple[int, list[float]]:
    from safetensors.torch import load_file

    meta = json.loads((place.folder / META_FILE).read_text(encoding="utf-8"))
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{META_FILE} is not an adcore training checkpoint")
    if meta.get("fingerprint") != place.fingerprint:
        raise ValueError("it is of another fit (other settings, data or version)")
    tensors = load_file(str(place.folder / TENSORS_FILE))
    load_modules_state({name: obj for name, obj in objects.items() if isinstance(obj, nn.Module)}, tensors,
                       prefix="module.")
    for name, obj in objects.items():
        if not isinstance(obj, nn.Module):
            saved = meta["optimisers"][name]
            state: dict[int, dict[str, Any]] = {}
            prefix = f"optim.{name}."
            for key, value in tensors.items():
                if key.startswith(prefix):
                    index, slot = key[len(prefix):].split(".", 1)
                    state.setdefault(int(index), {})[slot] = value
            for index, slots in saved["scalars"].items():
                state.setdefault(int(index), {}).update(slots)
            obj.load_state_dict({"state": state, "param_groups": saved["param_groups"]})
            _check_optimiser_fits(obj, name)
    for name, rng in rngs.items():
        if isinstance(rng, torch.Generator):
            rng.set_state(tensors[f"rng.{name}"])
        else:
            rng.bit_generator.state = meta["numpy_rngs"][name]
    epoch, history = int(meta["epoch"]), [float(v) for v in meta["history"]]
    place.resumed_from = epoch
    return epoch, history


def _check_optimiser_fits(optimiser: torch.optim.Optimizer, name: str) -> None:
    """An optimiser's load_state_dict takes slots of any shape; a misfit would only fail at the next step."""
    for group in optimiser.param_groups:
        for parameter in group["params"]:
            for slot, value in optimiser.state.get(parameter, {}).items():
                if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape != parameter.shape:
                    raise ValueError(f"optimiser '{name}' slot '{slot}' has shape {tuple(value.shape)}, "
                                     f"its parameter {tuple(parameter.shape)}")


Snapshot = tuple[dict[str, Any], dict[str, Any]]


def _snapshot(objects: Mapping[str, Saved], rngs: Mapping[str, Rng]) -> Snapshot:
    """Copies of every state a failed restore could have changed half-way."""
    states = {name: copy.deepcopy(obj.state_dict()) for name, obj in objects.items()}
    generators = {name: rng.get_state() if isinstance(rng, torch.Generator) else copy.deepcopy(rng.bit_generator.state)
                  for name, rng in rngs.items()}
    return states, generators


def _restore_snapshot(snapshot: Snapshot, objects: Mapping[str, Saved], rngs: Mapping[str, Rng]) -> None:
    states, generators = snapshot
    for name, obj in objects.items():
        obj.load_state_dict(states[name])
    for name, rng in rngs.items():
        if isinstance(rng, torch.Generator):
            rng.set_state(generators[name])
        else:
            rng.bit_generator.state = generators[name]


def _is_checkpoint(folder: Path) -> bool:
    """A folder holding only checkpoint files is one, even when those files are damaged."""
    try:
        names = {entry.name for entry in os.scandir(folder)}
    except OSError:
        return False
    return bool(names) and names <= {TENSORS_FILE, META_FILE}


KIND = fs.Kind("a training checkpoint", FORMAT, META_FILE, recognise=_is_checkpoint)
