"""The accelerated greedy coreset picks exactly what the plain greedy loop picks."""

from __future__ import annotations

import torch

from adcore_plugin_patchcore.coreset import greedy_coreset, random_projection


def plain_greedy(features: torch.Tensor, ratio: float, seed: int) -> torch.Tensor:
    """The official loop, one full distance row per pick (reference for the test)."""
    n = features.shape[0]
    count = max(1, round(n * ratio))
    generator = torch.Generator().manual_seed(seed)
    z = random_projection(features, 128, generator)
    starts = torch.randperm(n, generator=generator)[:10]
    mind = torch.cdist(z, z[starts]).mean(1)
    picks = []
    for _ in range(count):
        pick = int(mind.argmax())
        picks.append(pick)
        mind = torch.minimum(mind, torch.cdist(z, z[pick: pick + 1])[:, 0])
        mind[pick] = 0
    return torch.tensor(picks)


def test_same_picks_as_the_plain_loop():
    generator = torch.Generator().manual_seed(1)
    centres = torch.randn(20, 200, generator=generator) * 4
    features = centres[torch.randint(0, 20, (1200,), generator=generator)] + torch.randn(1200, 200,
                                                                                          generator=generator)
    fast = greedy_coreset(features, 0.05, seed=7)
    assert torch.equal(fast, plain_greedy(features, 0.05, seed=7))


def test_ratio_bounds():
    features = torch.randn(50, 8)
    assert greedy_coreset(features, 1.0).tolist() == list(range(50))
    picks = greedy_coreset(features, 0.001)
    assert picks.shape == (1,)
    assert len(set(greedy_coreset(features, 0.5).tolist())) == 25
