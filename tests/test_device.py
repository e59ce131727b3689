"""Every detector fits and predicts on a GPU with the CPU's scores (skipped without one)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adcore.plugins import get_registry
from adcore.testing import conformance_data

#: Cheapest settings per detector; the trained ones get a few steps only.
QUICK = {
    "patchcore": {"backbone_weights": "random"},
    "padim": {"backbone_weights": "random", "n_features": 20},
    "spade": {"backbone_weights": "random", "gallery_dtype": "float32"},
    "simplenet": {"backbone_weights": "random", "epochs": 2},
    "reverse_distillation": {"backbone_weights": "random", "epochs": 2, "train_batch_size": 8},
    "riad": {"epochs": 2, "base_width": 8},
    "draem": {"epochs": 2},
}
#: cuDNN and CPU kernels sum in different orders; a trained network amplifies that over its steps.
RTOL = {"patchcore": 1e-3, "padim": 1e-3, "spade": 1e-3}
RTOL_TRAINED = 5e-2

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")


@requires_cuda
@pytest.mark.parametrize("name", sorted(QUICK))
def test_gpu_scores_match_cpu(name):
    if name not in get_registry().names("detector"):
        pytest.skip(f"{name} is not installed")
    cls = get_registry().load_object("detector", name)
    train, test, _, _ = conformance_data()
    cpu = cls(**QUICK[name]).fit(train).predict(test, progress=None)
    gpu = cls(**QUICK[name], device="cuda").fit(train).predict(test, progress=None)
    rtol = RTOL.get(name, RTOL_TRAINED)
    scale = float(np.abs(cpu.scores).max())
    np.testing.assert_allclose(gpu.scores, cpu.scores, rtol=rtol, atol=rtol * scale)
    assert gpu.anomaly_maps.shape == cpu.anomaly_maps.shape


def test_a_model_trained_on_a_gpu_predicts_on_the_cpu(tmp_path):
    """Where a model runs is not part of what it learnt: --device replaces the saved device."""
    import json

    from adcore.detector import load_model
    from adcore.errors import ModelFileError

    cls = get_registry().load_object("detector", "padim")
    train, test, _, _ = conformance_data()
    fitted = cls(n_features=20).fit(train)  # the packaged ImageNet weights: random ones are not saved
    folder = fitted.save(tmp_path / "model")
    document = json.loads((folder / "config.json").read_text())
    document["config"]["device"] = "cuda:0"
    (folder / "config.json").write_text(json.dumps(document))
    loaded, _ = load_model(folder, device="cpu")
    np.testing.assert_allclose(loaded.predict(test, progress=None).scores,
                               fitted.predict(test, progress=None).scores, rtol=1e-6)
    if not torch.cuda.is_available():
        with pytest.raises(ModelFileError, match="device"):
            load_model(folder)

