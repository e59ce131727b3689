"""A small training loop shared by the trained detectors (SimpleNet, Reverse Distillation, ...).

Two functions:

* :func:`cache_features` runs a frozen network (a backbone, or a detector's
  embedding built on one) once over all training images and stacks its outputs,
  so an epoch costs only the trainable part.
* :func:`train` runs epochs of mini-batches through a ``step`` callable that
  does the forward pass, the backward pass and the optimiser step(s), and returns
  the batch loss. It shuffles with a ``torch.Generator`` seeded from ``seed``,
  reports epoch and running loss to the caller's ``progress``, stops early on an
  epoch or time budget, and returns the per-epoch mean losses (the detector keeps
  them, e.g. as ``loss_history_``).

Given a ``checkpoint`` place (``adcore run`` passes one to ``Detector.fit``,
which hands it on in ``_fit``'s :class:`~adcore.detector.Fitting`), ``train``
saves the modules, optimisers and random generators passed as ``saved`` and
``rngs`` after every epoch, and resumes from such a checkpoint of the same fit
(a damaged one, or one of another fit, is discarded with a warning and
training starts over). Without one, nothing is read or written.
A KeyboardInterrupt propagates unchanged: the runner writes models atomically,
so an interrupted fit leaves no model behind, only its last checkpoint.

Example (in ``_fit(self, batches, count, fitting)``)::

    data = cache_features(self.embed, batches, count, fitting.progress)   # CachedData
    def step(batch):                                                       # batch: a tensor
        loss = loss_fn(model(batch))
        optimiser.zero_grad(); loss.backward(); optimiser.step()
        return loss.item()
    self.loss_history_ = train(step, data, epochs=c.epochs, batch_size=8, seed=c.seed,
                               progress=fitting.progress, checkpoint=fitting.checkpoint,
                               saved={"model": model, "optimiser": optimiser})
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch

from adcore import checkpoints
from adcore.progress import Progress, silent, track_batches

__all__ = ["CachedData", "cache_features", "train"]

Step = Callable[[Any], float]


class CachedData:
    """Tensors that share their first dimension (one row per training image), kept in memory.

    :func:`train` draws mini-batches of rows from it: a batch is one tensor when
    there is one tensor, else a tuple with one tensor per entry, rows aligned.
    """

    def __init__(self, *tensors: torch.Tensor) -> None:
        if not tensors:
            raise ValueError("CachedData needs at least one tensor")
        length = tensors[0].shape[0]
        if any(t.shape[0] != length for t in tensors):
            raise ValueError(f"CachedData tensors differ in length: {[t.shape[0] for t in tensors]}")
        self.tensors: tuple[torch.Tensor, ...] = tuple(tensors)

    def __len__(self) -> int:
        return int(self.tensors[0].shape[0])

    def __getitem__(self, index: torch.Tensor | slice) -> torch.Tensor | tuple[torch.Tensor, ...]:
        rows = tuple(t[index] for t in self.tensors)
        return rows[0] if len(rows) == 1 else rows

    def batches(self, batch_size: int, generator: torch.Generator | None = None,
                drop_last: bool = False) -> Iterable[torch.Tensor | tuple[torch.Tensor, ...]]:
        """Mini-batches in a random order drawn from ``generator`` (in order when None)."""
        n = len(self)
        order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
        stop = n - n % batch_size if drop_last and n >= batch_size else n
        for start in range(0, stop, batch_size):
            yield self[order[start: start + batch_size]]


def cache_features(network: Callable[[torch.Tensor], torch.Tensor | Sequence[torch.Tensor]],
                   batches: Iterable[torch.Tensor], count: int, progress: Progress = silent,
                   desc: str = "features") -> CachedData:
    """Run a frozen ``network`` once over every image batch and stack its outputs.

    Args:
        network: images (B, 3, H, W) -> a tensor or a list of tensors (e.g. one
            per feature level), each with B rows; run under ``torch.no_grad``.
        batches: image batches (as :meth:`adcore.Detector._fit` receives them).
        count: number of images in all (sizes the buffers and the progress task).
        progress: where the images done are counted (the fit's ``fitting.progress``).
        desc: progress task label.

    Returns:
        CachedData with one (count, ...) float32 tensor per network output, on the
        outputs' device, filled without an intermediate list (peak memory about
        the cache itself).
    """
    buffers: list[torch.Tensor] | None = None
    filled = 0
    with torch.no_grad():
        for batch in track_batches(progress, batches, count, desc):
            outputs = network(batch)
            outputs = [outputs] if isinstance(outputs, torch.Tensor) else list(outputs)
            if buffers is None:
                buffers = [torch.empty((count, *o.shape[1:]), dtype=torch.float32, device=o.device)
                           for o in outputs]
            rows = outputs[0].shape[0]
            if filled + rows > count:
                raise ValueError(f"cache_features: more than count={count} images in the batches")
            for buffer, output in zip(buffers, outputs):
                buffer[filled: filled + rows] = output.detach()
            filled += rows
    if buffers is None:
        raise ValueError("cache_features: no images")
    return CachedData(*(b[:filled] for b in buffers))


def train(step: Step, data: CachedData | torch.Tensor | Iterable[Any], epochs: int, batch_size: int,
          seed: int, time_budget_s: float | None = None, desc: str = "train", drop_last: bool = False,
          on_epoch_end: Callable[[int, float], None] | None = None, progress: Progress = silent,
          checkpoint: checkpoints.Place | None = None, saved: Mapping[str, checkpoints.Saved] | None = None,
          rngs: Mapping[str, checkpoints.Rng] | None = None) -> list[float]:
    """Run up to ``epochs`` epochs of ``step`` over mini-batches of ``data``.

    Args:
        step: called with one mini-batch; does forward, backward and optimiser
            step(s) and returns the batch loss as a float.
        data: a :class:`CachedData` or a tensor (mini-batches of ``batch_size``
            rows, reshuffled every epoch by a generator seeded with ``seed``), or
            any re-iterable of ready batches (an image source), passed through
            once per epoch in its own order; ``batch_size`` is then unused.
        epochs: epoch budget (>= 1).
        batch_size: rows per mini-batch for cached data.
        seed: seeds the shuffling generator (the same seed gives the same order).
        time_budget_s: stop once this many seconds have passed since the start;
            checked after every step, so at least one step runs and the epoch
            in progress ends early (its mean loss still counts as an epoch).
        desc: progress task label.
        drop_last: skip the last, smaller mini-batch of cached data (useful when
            a step uses batch statistics and a single row would be a problem).
        on_epoch_end: ``f(epoch_index, mean_loss)`` after each epoch, e.g. to
            step a learning-rate schedule.
        progress: where epochs, the running loss and one milestone per epoch are reported.
        checkpoint: where to save the state after every epoch and resume from (the fit's
            ``fitting.checkpoint``); None: no checkpoint is read or written.
        saved: the modules and optimisers a checkpoint must hold (by name);
            without them nothing is checkpointed.
        rngs: every random generator ``step`` draws from (numpy or torch), so a
            resumed training draws what the uninterrupted one would have.

    Returns:
        Mean step loss of every epoch run, in order (length = epochs run).
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1; got {epochs}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    if time_budget_s is not None and not time_budget_s >= 0:
        raise ValueError(f"time_budget_s must be >= 0 or None; got {time_budget_s}")
    if isinstance(data, torch.Tensor):
        data = CachedData(data)
    generator = torch.Generator().manual_seed(seed)
    started = time.perf_counter()
    history: list[float] = []
    out_of_time = False
    place = checkpoint if saved else None
    generators = {**(rngs or {}), "_shuffle": generator}
    first = 0
    if place is not None:
        resumed = checkpoints.load(place, saved or {}, generators)
        if resumed is not None:
            first, history = resumed
    with progress(desc, epochs, "epoch", initial=min(first, epochs)) as task:
        for epoch in range(first, epochs):
            if isinstance(data, CachedData):
                batches: Iterable[Any] = data.batches(batch_size, generator, drop_last)
            else:
                batches = data
            total, steps = 0.0, 0
            for batch in batches:
                loss = float(step(batch))
                total += loss
                steps += 1
                task.note(f"epoch {epoch + 1}/{epochs} loss {total / steps:.4g}")
                if time_budget_s is not None and time.perf_counter() - started >= time_budget_s:
                    out_of_time = True
                    break
            if steps == 0:
                raise ValueError("train: an epoch yielded no batches")
            mean = total / steps
            if not math.isfinite(mean):
                raise FloatingPointError(f"{desc}: loss is {mean} in epoch {epoch + 1}")
            history.append(mean)
            task.advance(1)
            seconds = time.perf_counter() - started
            task.milestone(f"{desc}: epoch {epoch + 1}/{epochs} loss {mean:.4g} ({seconds:.0f} s)")
            if on_epoch_end is not None:
                on_epoch_end(epoch, mean)
            if out_of_time:
                break
            if place is not None:
                checkpoints.save(place, epoch + 1, history, saved or {}, generators)
    return history
