"""The detector contract: a tensor and a list of batches are the same training set."""

from __future__ import annotations

import numpy as np
import torch

from adcore_plugin_padim.detector import PaDiM
from adcore_plugin_patchcore.detector import PatchCore


def test_fit_on_a_list_of_batches_counts_images_not_batches():
    images = torch.rand(8, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    test = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    for cls, params in ((PaDiM, {"n_features": 20}), (PatchCore, {})):
        whole = cls(backbone_weights="random", **params).fit(images).predict(test, progress=None)
        batches = cls(backbone_weights="random", **params).fit(list(images.split(4))).predict(test, progress=None)
        np.testing.assert_allclose(batches.scores, whole.scores, rtol=1e-5, err_msg=cls.__name__)
