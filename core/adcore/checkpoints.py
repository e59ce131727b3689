"""Training checkpoints, so an interrupted training resumes at its last finished epoch.

The runner opens a checkpoint folder for each fit with :func:`checkpointing`;
:func:`adcore.training.train` saves the modules, optimisers and random
generators a detector hands it after every epoch and, when it finds a
checkpoint of the same fit (same fingerprint), restores them and goes on.
Tensors go to safetensors and everything else to JSON, so loading a checkpoint
executes no code, like loading a model. A checkpoint is not a model: the
runner deletes it once the model is written.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Union

import attrs
import numpy as np
import torch
from torch import nn

TENSORS_FILE = "state.safetensors"
META_FILE = "state.json"
_LATEST = "latest"

Saved = Union[nn.Module, torch.optim.Optimizer]
Rng = Union[np.random.Generator, torch.Generator]


@attrs.define
class Place:
    """Where the current fit keeps its checkpoint, what identifies that fit, and where it resumed."""

    folder: Path
    fingerprint: str
    resumed_from: int | None = None  # finished epochs restored from a checkpoint, if any


_current: contextvars.ContextVar[Place | None] = contextvars.ContextVar("adcore_checkpoint", default=None)


@contextlib.contextmanager
def checkpointing(folder: Path, fingerprint: str) -> Iterator[Place]:
    """Let :func:`adcore.training.train` checkpoint into ``folder`` while the block runs."""
    place = Place(Path(folder), fingerprint)
    token = _current.set(place)
    try:
        yield place
    finally:
        _current.reset(token)


def current() -> Place | None:
    """The active checkpoint place, or None outside :func:`checkpointing`."""
    return _current.get()


def remove(folder: Path) -> None:
    """Delete a checkpoint folder (after the model it was for has been written)."""
    shutil.rmtree(folder, ignore_errors=True)


def save(place: Place, epoch: int, history: list[float], objects: Mapping[str, Saved],
         rngs: Mapping[str, Rng]) -> None:
    """Write the state after ``epoch`` finished epochs; the previous checkpoint is replaced atomically."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    meta: dict[str, Any] = {"fingerprint": place.fingerprint, "epoch": epoch, "history": history,
                            "optimisers": {}, "numpy_rngs": {}}
    for name, obj in objects.items():
        if isinstance(obj, nn.Module):
            for key, value in obj.state_dict().items():
                tensors[f"module.{name}.{key}"] = value
        else:
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
    place.folder.mkdir(parents=True, exist_ok=True)
    tmp = place.folder / f".tmp-{epoch}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp / TENSORS_FILE))
    (tmp / META_FILE).write_text(json.dumps(meta))
    latest, old = place.folder / _LATEST, place.folder / ".old"
    shutil.rmtree(old, ignore_errors=True)
    if latest.exists():
        os.replace(latest, old)
    os.replace(tmp, latest)
    shutil.rmtree(old, ignore_errors=True)


def load(place: Place, objects: Mapping[str, Saved], rngs: Mapping[str, Rng]) -> tuple[int, list[float]] | None:
    """Restore a checkpoint of this fit into ``objects`` and ``rngs``.

    Returns (finished epochs, loss history), or None when there is no
    checkpoint of this fit (none at all, another fingerprint, or unreadable).
    """
    from safetensors.torch import load_file

    folder = next((f for f in (place.folder / _LATEST, place.folder / ".old") if (f / META_FILE).is_file()), None)
    if folder is None:
        return None
    try:
        meta = json.loads((folder / META_FILE).read_text())
        tensors = load_file(str(folder / TENSORS_FILE))
    except (OSError, ValueError, RuntimeError):
        return None
    if meta.get("fingerprint") != place.fingerprint:
        return None
    for name, obj in objects.items():
        if isinstance(obj, nn.Module):
            prefix = f"module.{name}."
            obj.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
        else:
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
    for name, rng in rngs.items():
        if isinstance(rng, torch.Generator):
            rng.set_state(tensors[f"rng.{name}"])
        else:
            rng.bit_generator.state = meta["numpy_rngs"][name]
    place.resumed_from = int(meta["epoch"])
    return place.resumed_from, [float(v) for v in meta["history"]]
