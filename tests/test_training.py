"""The shared training helper: shuffling, budgets, loss history, feature caching."""

import time

import pytest
import torch

from adcore.progress import terminal
from adcore.training import CachedData, cache_features, train


def _recorder(seen, loss=1.0):
    def step(batch):
        seen.append(batch.clone() if isinstance(batch, torch.Tensor) else batch)
        return loss
    return step


def test_shuffling_is_deterministic_by_seed():
    data = torch.arange(20)
    runs = []
    for seed in (5, 5, 6):
        seen = []
        train(_recorder(seen), data, epochs=2, batch_size=4, seed=seed)
        runs.append(torch.cat(seen))
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])
    # every epoch visits every row exactly once, in a new order
    first, second = runs[0][:20], runs[0][20:]
    assert sorted(first.tolist()) == list(range(20)) == sorted(second.tolist())
    assert not torch.equal(first, second)


def test_epoch_budget_and_history_length():
    seen = []
    losses = iter(range(100))
    history = train(lambda b: (seen.append(b), float(next(losses)))[1], torch.zeros(10, 2), epochs=3,
                    batch_size=4, seed=0)
    assert len(seen) == 9  # 3 epochs x ceil(10 / 4) batches
    assert history == [1.0, 4.0, 7.0]  # mean step loss per epoch


def test_drop_last_and_aligned_tuples():
    a = torch.arange(10)
    data = CachedData(a, a * 10)
    seen = []
    train(_recorder(seen), data, epochs=1, batch_size=4, seed=0, drop_last=True)
    assert len(seen) == 2
    for x, y in seen:
        assert torch.equal(y, x * 10)


def test_time_budget_stops_early():
    def slow(batch):
        time.sleep(0.02)
        return 1.0

    history = train(slow, torch.zeros(8, 1), epochs=1000, batch_size=1, seed=0, time_budget_s=0.1)
    assert 1 <= len(history) < 1000
    assert len(train(slow, torch.zeros(4, 1), epochs=5, batch_size=1, seed=0, time_budget_s=0)) == 1


def test_image_source_passes_batches_through():
    source = [torch.ones(2, 3), torch.zeros(1, 3)]
    seen = []
    history = train(_recorder(seen, 2.0), source, epochs=2, batch_size=99, seed=0)
    assert len(seen) == 4 and history == [2.0, 2.0]
    assert torch.equal(seen[0], source[0]) and torch.equal(seen[1], source[1])


def test_on_epoch_end_and_bad_loss():
    calls = []
    train(lambda b: 0.5, torch.zeros(3), epochs=2, batch_size=2, seed=0,
          on_epoch_end=lambda e, loss: calls.append((e, loss)))
    assert calls == [(0, 0.5), (1, 0.5)]
    with pytest.raises(FloatingPointError):
        train(lambda b: float("nan"), torch.zeros(3), epochs=1, batch_size=2, seed=0)
    with pytest.raises(ValueError):
        train(lambda b: 0.0, torch.zeros(3), epochs=0, batch_size=2, seed=0)


def test_keyboard_interrupt_propagates():
    def step(batch):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(step, torch.zeros(3), epochs=2, batch_size=1, seed=0)


def test_cache_features_runs_once_and_stacks():
    calls = []

    def network(images):
        calls.append(len(images))
        return [images.mean(dim=(2, 3)), images[:, :1]]

    images = torch.rand(5, 3, 4, 4)
    cached = cache_features(network, images.split(2), 5)
    assert calls == [2, 2, 1] and len(cached) == 5
    means, firsts = cached.tensors
    assert torch.allclose(means, images.mean(dim=(2, 3))) and torch.equal(firsts, images[:, :1])
    single = cache_features(lambda x: x * 2, [images], 5)
    assert len(single.tensors) == 1 and torch.equal(single.tensors[0], images * 2)


def test_loss_history_is_saved_with_the_model_by_the_core(tmp_path, monkeypatch):
    from adcore.detector import Detector, load_model
    from adcore.modelfile import LOSS_HISTORY

    class Toy(Detector):
        name = "toy"

        def _fit(self, batches, count, fitting):
            self.mean_ = torch.cat(list(batches)).mean(dim=0)
            self.loss_history_ = [2.0, 1.5]

        def _predict_batch(self, images):
            maps = (images - self.mean_).abs().mean(dim=1)
            return maps.amax(dim=(1, 2)), maps

        def _get_state(self):
            return {"mean": self.mean_}

        def _set_state(self, tensors):
            assert LOSS_HISTORY not in tensors  # the core takes its reserved key out first
            self.mean_ = tensors["mean"]

    class Registry:
        def load_object(self, kind, name):
            return Toy

    folder = Toy().fit(torch.rand(2, 3, 8, 8)).save(tmp_path / "model")
    monkeypatch.setattr("adcore.plugins.get_registry", lambda: Registry())
    loaded, _ = load_model(folder)
    assert loaded.loss_history_ == [2.0, 1.5] and Toy().loss_history_ == []


def test_epochs_are_logged_where_stderr_is_a_log(monkeypatch, capsys):
    """Bars are off in a redirected run, but each epoch still leaves one plain line."""
    monkeypatch.delenv("ADCORE_PROGRESS")  # automatic mode; pytest's stderr is not a terminal
    train(lambda batch: 0.5, torch.zeros(4, 1), epochs=2, batch_size=2, seed=0, desc="toy train", progress=terminal)
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" (")[0] for line in lines] == ["toy train: epoch 1/2 loss 0.5",
                                                       "toy train: epoch 2/2 loss 0.5"]
    monkeypatch.setenv("ADCORE_PROGRESS", "0")
    train(lambda batch: 0.5, torch.zeros(4, 1), epochs=2, batch_size=2, seed=0, progress=terminal)
    assert capsys.readouterr().err == ""


def test_a_library_fit_is_silent_and_shows_progress_only_when_asked(monkeypatch, capsys):
    """Progress is the caller's: fit() prints nothing by default, fit(progress=terminal) draws the bars."""
    from adcore.detector import Detector

    class Trained(Detector):
        name = "toy"

        def _fit(self, batches, count, fitting):
            data = cache_features(lambda x: x.mean(dim=(2, 3)), batches, count, fitting.progress, desc="toy features")
            self.mean_ = data.tensors[0].mean(0)
            self.loss_history_ = train(lambda batch: 0.5, data, epochs=2, batch_size=2, seed=0, desc="toy train",
                                       progress=fitting.progress)

        def _predict_batch(self, images):
            maps = (images.mean(dim=1) - self.mean_.mean()).abs()
            return maps.flatten(1).amax(1), maps

        def _get_state(self):
            return {"mean": self.mean_}

        def _set_state(self, tensors):
            self.mean_ = tensors["mean"]

    monkeypatch.setenv("ADCORE_PROGRESS", "1")  # bars forced on, even though pytest's stderr is no terminal
    images = torch.rand(4, 3, 8, 8)
    Trained().fit(images)
    assert capsys.readouterr().err == ""
    Trained().fit(images, progress=terminal)
    shown = capsys.readouterr().err
    assert "toy features" in shown and "img/s" in shown and "toy train" in shown and "epoch/s" in shown
