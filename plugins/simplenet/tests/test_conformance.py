"""SimpleNet passes the shared adcore detector checks, and its loss is the paper's."""

import torch

from adcore.testing import parametrize_with_checks
from adcore_plugin_simplenet.detector import SimpleNet, truncated_l1_loss


# Quick-test settings: the conformance set has 16 images of 64 px (64 positions each), so one
# image per step gives 16 steps an epoch; with so little data the discriminator only separates
# noised features within 10 epochs when the noise is large (σ=1.0 vs. feature std ~2-3; the
# default 0.3 needs more steps). Measured: image/pixel AUROC 0.85/0.79; 6 epochs gave 0.75/0.72.
QUICK = {"epochs": 10, "train_batch_size": 1, "noise_std": 1.0}


@parametrize_with_checks(lambda **kw: SimpleNet(**{**QUICK, **kw}))
def test_conformance(check):
    check()


def test_truncated_l1_loss_hand_computed():
    true = torch.tensor([1.0, 0.5, 0.0, -1.0])  # max(0, 0.5 - s): 0, 0, 0.5, 1.5 -> mean 0.5
    fake = torch.tensor([-1.0, -0.5, 0.25, 2.0])  # max(0, s + 0.5): 0, 0, 0.75, 2.5 -> mean 0.8125
    assert torch.isclose(truncated_l1_loss(true, fake, 0.5), torch.tensor(1.3125))
    assert truncated_l1_loss(torch.full((3,), 0.6), torch.full((3,), -0.6), 0.5) == 0


def test_loss_history_kept_and_falls():
    from adcore.testing import conformance_data

    detector = SimpleNet(**{**QUICK, "epochs": 3}).fit(conformance_data()[0])
    history = detector.loss_history_
    assert len(history) == 3 and all(isinstance(v, float) for v in history)
    assert history[-1] < history[0]
