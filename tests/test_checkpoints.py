"""Training checkpoints: an interrupted training resumes to exactly the uninterrupted result."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from adcore import checkpoints
from adcore.detector import Detector
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

    place = None if folder is None else checkpoints.Place(folder, fingerprint)
    history = train(step, data, EPOCHS, 4, seed=1, on_epoch_end=on_epoch_end, checkpoint=place,
                    saved={"model": model, "optimiser": optimiser}, rngs={"rng": rng, "noise": noise})
    return history, model


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


class _Trained(Detector):
    """One linear layer trained by adcore.training.train, handed its fit's checkpoint as a plugin does."""

    name = "trained-toy"
    tags = {"trainable": True}

    def _fit(self, batches, count, fitting):
        torch.manual_seed(0)
        self.model_ = nn.Linear(3, 1)
        optimiser = torch.optim.SGD(self.model_.parameters(), lr=0.1)
        pixels = torch.cat([b.mean(dim=(2, 3)) for b in batches])

        def step(batch: torch.Tensor) -> float:
            loss = self.model_(batch).pow(2).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            return loss.item()

        self.loss_history_ = train(step, pixels, EPOCHS, 2, seed=0, progress=fitting.progress,
                                   checkpoint=fitting.checkpoint,
                                   saved={"model": self.model_, "optimiser": optimiser})

    def _predict_batch(self, images):
        maps = self.model_(images.permute(0, 2, 3, 1)).squeeze(-1)
        return maps.flatten(1).amax(1), maps

    def _get_state(self):
        return dict(self.model_.state_dict())

    def _set_state(self, tensors):
        self.model_ = nn.Linear(3, 1)
        self.model_.load_state_dict(tensors)


def test_a_plain_fit_never_reads_or_writes_a_checkpoint(tmp_path, monkeypatch):
    images = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    place = checkpoints.Place(tmp_path / "checkpoint", "fit-a")
    given = _Trained().fit(images, checkpoint=place)
    assert (place.folder / checkpoints.META_FILE).is_file() and place.resumed_from is None

    def refused(*args, **kwargs):
        raise AssertionError("a fit without a checkpoint touched one")

    monkeypatch.setattr(checkpoints, "load", refused)
    monkeypatch.setattr(checkpoints, "save", refused)
    plain = _Trained().fit(images)  # the same fit, with a finished checkpoint of it on disk
    assert plain.loss_history_ == given.loss_history_ and len(plain.loss_history_) == EPOCHS
    assert sorted(p.name for p in place.folder.iterdir()) == sorted([checkpoints.META_FILE, checkpoints.TENSORS_FILE])
    monkeypatch.undo()
    again = checkpoints.Place(place.folder, "fit-a")
    resumed = _Trained().fit(images, checkpoint=again)
    assert again.resumed_from == EPOCHS and resumed.loss_history_ == given.loss_history_
