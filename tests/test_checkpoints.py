"""Training checkpoints: an interrupted training resumes to exactly the uninterrupted result."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from adcore import checkpoints
from adcore.training import train

EPOCHS = 6


def _setup():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 1))
    optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
    rng = np.random.default_rng(3)
    noise = torch.Generator().manual_seed(4)
    return model, optimiser, rng, noise


def _run(data, interrupt_at: int | None = None, folder=None, fingerprint="fit-a"):
    model, optimiser, rng, noise = _setup()
    calls = {"n": 0}

    def step(batch: torch.Tensor) -> float:
        calls["n"] += 1
        if interrupt_at is not None and calls["n"] == interrupt_at:
            raise KeyboardInterrupt
        shift = float(rng.normal()) + torch.randn(1, generator=noise)  # both generators are used
        loss = (model(batch + shift).squeeze(1) - batch.sum(1)).pow(2).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        return loss.item()

    def on_epoch_end(epoch: int, loss: float) -> None:
        if epoch == 2:  # a schedule change must survive the checkpoint too
            for group in optimiser.param_groups:
                group["lr"] *= 0.5

    def fit():
        return train(step, data, EPOCHS, 4, seed=1, on_epoch_end=on_epoch_end,
                     saved={"model": model, "optimiser": optimiser}, rngs={"rng": rng, "noise": noise})

    if folder is None:
        return fit(), model
    with checkpoints.checkpointing(folder, fingerprint):
        return fit(), model


def test_resumed_training_equals_the_uninterrupted_one(tmp_path):
    data = torch.randn(16, 4, generator=torch.Generator().manual_seed(0))
    expected, reference = _run(data)
    with pytest.raises(KeyboardInterrupt):
        _run(data, interrupt_at=4 * 3 + 2, folder=tmp_path)  # in epoch 4, after 3 saved epochs
    history, model = _run(data, folder=tmp_path)
    assert history == expected
    for want, got in zip(reference.state_dict().values(), model.state_dict().values()):
        assert torch.equal(want, got)


def test_checkpoint_of_another_fit_is_ignored(tmp_path):
    data = torch.randn(16, 4, generator=torch.Generator().manual_seed(0))
    with pytest.raises(KeyboardInterrupt):
        _run(data, interrupt_at=10, folder=tmp_path, fingerprint="other settings")
    history, _ = _run(data, folder=tmp_path, fingerprint="fit-a")
    assert history == _run(data)[0] and len(history) == EPOCHS


def test_checkpoint_holds_no_pickles(tmp_path):
    data = torch.randn(16, 4, generator=torch.Generator().manual_seed(0))
    _run(data, folder=tmp_path)
    files = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    assert files == sorted([checkpoints.TENSORS_FILE, checkpoints.META_FILE])
