"""The nearest-neighbour component: exact kinds equal brute force; approximate kinds are opt-in."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from adcore.errors import ConfigError
from adcore.neighbors import ClusteredIndex, ExactIndex, PartitionedRows, build_index

RTOL = 1e-5


def _clustered_data(n: int, dim: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(12, dim, generator=generator) * 3
    return centres[torch.randint(0, 12, (n,), generator=generator)] + torch.randn(n, dim, generator=generator)


def _truth(queries: torch.Tensor, bank: torch.Tensor, k: int) -> torch.Tensor:
    return torch.cdist(queries.double(), bank.double()).topk(k, dim=1, largest=False).values


def _max_relative(found: torch.Tensor, truth: torch.Tensor) -> float:
    return float(((found.double() - truth).abs() / truth.clamp_min(1e-12)).max())


@pytest.mark.parametrize("kind", ["exact", "clustered"])
@pytest.mark.parametrize("k", [1, 4])
def test_exact_kinds_match_brute_force(kind: str, k: int) -> None:
    bank, queries = _clustered_data(3000, 40, 0), _clustered_data(700, 40, 1)
    distances, indices = build_index(bank, kind).search(queries, k)
    assert _max_relative(distances, _truth(queries, bank, k)) < RTOL
    direct = (queries.unsqueeze(1) - bank[indices]).norm(dim=2)
    torch.testing.assert_close(direct, distances, rtol=RTOL, atol=0)


def test_queries_far_from_the_bank_fall_back_to_brute_force_exactly() -> None:
    """Queries the cell bounds cannot prune (uniform noise far from a clustered bank) take the
    brute-force path for their chunk; the answer is the same."""
    bank = _clustered_data(3000, 32, 8)
    queries = torch.rand(400, 32, generator=torch.Generator().manual_seed(9)) * 40 - 20
    distances, indices = ClusteredIndex(bank, cells=30).search(queries, 3)
    assert _max_relative(distances, _truth(queries, bank, 3)) < RTOL
    torch.testing.assert_close((queries.unsqueeze(1) - bank[indices]).norm(dim=2), distances, rtol=RTOL, atol=0)


def test_squared_and_bounded_blocks() -> None:
    bank, queries = _clustered_data(2000, 24, 2), _clustered_data(500, 24, 3)
    tiny = ExactIndex(bank, chunk_bytes=4 * 1024)  # many query and bank blocks
    squared, _ = tiny.search(queries, 3, squared=True)
    assert _max_relative(squared.sqrt(), _truth(queries, bank, 3)) < RTOL
    clustered = ClusteredIndex(bank, cells=16, chunk_bytes=4 * 1024)
    assert _max_relative(clustered.search(queries, 3)[0], _truth(queries, bank, 3)) < RTOL


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_partitioned_rows_search_a_union_of_groups_exactly(dtype: torch.dtype) -> None:
    """SPADE's galleries: an index over some groups equals brute force over their rows."""
    rows = _clustered_data(4000, 32, 6).to(dtype)
    groups = torch.arange(40).repeat_interleave(100)
    partition = PartitionedRows(rows, groups, cells=24)
    queries = _clustered_data(300, 32, 7)
    for chosen in (torch.tensor([3, 17, 5, 39]), torch.arange(40), torch.tensor([0])):
        subset = rows[(groups.unsqueeze(1) == chosen).any(1)].float()
        distances, indices = partition.index(chosen).search(queries, 2)
        assert _max_relative(distances, _truth(queries, subset, 2)) < RTOL
        assert bool((groups[indices].unsqueeze(-1) == chosen).any(-1).all())  # row numbers of ``rows``
        torch.testing.assert_close((queries.unsqueeze(1) - rows[indices].float()).norm(dim=2), distances,
                                   rtol=RTOL, atol=0)


def test_k_is_clipped_to_the_bank() -> None:
    bank = torch.randn(3, 5)
    distances, indices = build_index(bank, "clustered").search(torch.randn(4, 5), 10)
    assert distances.shape == indices.shape == (4, 3)


@pytest.mark.skipif(importlib.util.find_spec("faiss") is not None, reason="faiss is installed")
def test_missing_faiss_names_the_extra() -> None:
    with pytest.raises(ConfigError, match=r"pip install adcore\[ann\]"):
        build_index(torch.randn(100, 8), "ivf")


@pytest.mark.skipif(importlib.util.find_spec("faiss") is None, reason="needs faiss-cpu")
@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_kinds_only_over_estimate(kind: str) -> None:
    bank, queries = _clustered_data(4000, 16, 4), _clustered_data(300, 16, 5)
    distances, _ = build_index(bank, kind).search(queries, 1)
    assert bool((distances[:, 0].double() >= _truth(queries, bank, 1)[:, 0] * (1 - RTOL)).all())


def test_patchcore_and_spade_scores_equal_brute_force() -> None:
    """Fitted detectors: the pruned search gives the brute-force scores and maps."""
    from adcore_plugin_patchcore.detector import PatchCore
    from adcore_plugin_spade.detector import Spade

    generator = torch.Generator().manual_seed(0)
    train, test = torch.rand(6, 3, 64, 64, generator=generator), torch.rand(3, 3, 64, 64, generator=generator)
    for make, kinds in ((PatchCore, ("exact", "clustered")), (Spade, ("exact", "clustered"))):
        results = [make(backbone_weights="random", index=kind, batch_size=3).fit(train).predict(test, progress=None)
                   for kind in kinds]
        (scores_a, maps_a), (scores_b, maps_b) = [(r.scores, r.anomaly_maps) for r in results]
        assert _max_relative(torch.from_numpy(scores_b), torch.from_numpy(scores_a).double()) < RTOL
        assert _max_relative(torch.from_numpy(maps_b), torch.from_numpy(maps_a).double()) < RTOL
