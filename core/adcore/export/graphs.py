"""The prediction of a fitted detector as one traceable module: images in, scores and maps out.

Why a module per detector at all: ``torch.export`` needs one ``forward`` whose
work does not depend on the data, with every weight registered on it. Most
detectors' own ``_predict_batch`` is already such a computation, so the default
graph simply calls it (the same code scores both engines). Two need a graph
written from the outside, because their torch path is shaped for a CPU, not a
graph: PatchCore searches its bank in blocks chosen from the batch size, and
PaDiM picks channels with a boolean mask. SPADE cannot live in a graph: every
test image builds its own gallery from its K nearest training images and
searches all their positions (a data-dependent search that, held as one
tensor, needs gigabytes per image).

A third-party detector can provide its own graph with an ``export_graph()``
method returning such a module; otherwise the default is tried, and the parity
check of :mod:`adcore.export.writer` refuses a graph that scores differently.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from adcore.detector import Detector
from adcore.export.errors import ExportError
from adcore.ops import gaussian_blur, upsample_maps

__all__ = ["NOT_EXPORTABLE", "PredictGraph", "graph_for"]

#: Detectors whose prediction cannot be one graph, and why (shown by ``adcore export``, kept in their READMEs).
NOT_EXPORTABLE = {
    "spade": "SPADE builds a new pixel gallery for every test image from its K nearest training images "
             "and searches all their positions: a data-dependent search that no fixed graph holds "
             "(as one tensor it needs gigabytes per image)",
}
#: PatchCore indices whose search the graph reproduces exactly (the approximate faiss ones it cannot).
_EXACT_INDICES = ("exact", "clustered")


class PredictGraph(nn.Module):
    """Calls the detector's own ``_predict_batch``, with every module it uses registered for export."""

    def __init__(self, detector: Detector) -> None:
        super().__init__()
        self.detector = detector
        for name, value in vars(detector).items():
            if isinstance(value, nn.Module):
                self.add_module(name.strip("_"), value)
        extractor = getattr(detector, "_extractor", None)
        if extractor is not None:
            self.backbone = extractor.network

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.detector._predict_batch(images)


class PatchCoreGraph(nn.Module):
    """PatchCore's exact nearest-neighbour scoring as whole-batch matrix products.

    Same steps as the plugin with an exact index: the nearest bank row by
    ``|b|²/2 - q·b``, its distance recomputed directly as ``|q - b|``, and the
    paper's re-weighting of the worst patch by its b nearest bank rows. The
    nearest row of every patch is found in blocks of :attr:`bank_block` bank
    rows (unrolled at export: the bank's size is fixed), so memory holds
    patches × block products, not patches × bank, which grows with the tiles
    of a tiled bank. Measured on 2048 px images (64 tiles, a 26,214-row bank,
    runs of 4 images): peak 1.9 GB in blocks, 2.7 GB with the whole bank.
    """

    #: Bank rows compared with the patches at once.
    bank_block = 4096

    def __init__(self, detector: Detector) -> None:
        super().__init__()
        self.detector = detector
        self.backbone = detector.extractor.network  # type: ignore[attr-defined]
        bank = detector.memory_bank_.float().contiguous()  # type: ignore[attr-defined]
        self.register_buffer("bank", bank)
        self.register_buffer("half_sq", 0.5 * (bank * bank).sum(1))
        self.neighbours = min(int(detector.config.num_neighbors), bank.shape[0])  # type: ignore[attr-defined]
        self.sigma = float(detector.config.sigma)  # type: ignore[attr-defined]

    def _nearest(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Squared distances (Q, k) ascending and indices (Q, k) of the k nearest bank rows."""
        if k == 1:
            index = self._closest(queries)
        else:  # the b neighbours of one bank row per image: B queries, the whole bank is small enough
            index = (self.half_sq - queries @ self.bank.t()).topk(k, dim=1, largest=False).indices
        squared = (queries.unsqueeze(1) - self.bank[index]).square().sum(2)
        squared, order = squared.sort(dim=1)
        return squared, index.gather(1, order)

    def _closest(self, queries: torch.Tensor) -> torch.Tensor:
        """(Q, 1) index of each query's nearest bank row, block by block (the first of equals, as argmin)."""
        best: torch.Tensor | None = None
        where = torch.zeros(0)
        for start in range(0, self.bank.shape[0], self.bank_block):
            stop = start + self.bank_block
            value, index = (self.half_sq[start:stop] - queries @ self.bank[start:stop].t()).min(dim=1, keepdim=True)
            if best is None:
                best, where = value, index
            else:
                better = value < best
                best, where = torch.where(better, value, best), torch.where(better, index + start, where)
        return where

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding, grid = self.detector.embed(images)  # type: ignore[attr-defined]
        batch, dim = images.shape[0], embedding.shape[1]
        squared, location = self._nearest(embedding, 1)
        patch = squared[:, 0].sqrt().reshape(batch, -1)
        worst = patch.argmax(dim=1, keepdim=True)  # (B, 1)
        score = patch.gather(1, worst)[:, 0]
        features = embedding.reshape(batch, -1, dim)
        test_feature = features.gather(1, worst.unsqueeze(2).expand(batch, 1, dim))[:, 0]
        nearest = self.bank[location.reshape(batch, -1).gather(1, worst)[:, 0]]
        _, support = self._nearest(nearest, self.neighbours)
        support_dist = (test_feature.unsqueeze(1) - self.bank[support]).norm(dim=2)
        scores = (1.0 - torch.softmax(support_dist, dim=1)[:, 0]) * score
        maps = upsample_maps(patch.reshape(batch, *grid), tuple(images.shape[-2:]))
        return scores, gaussian_blur(maps, self.sigma)


class PaDiMGraph(nn.Module):
    """PaDiM with its channel subset split per level once, at export, instead of by a mask per batch."""

    def __init__(self, detector: Detector) -> None:
        super().__init__()
        from adcore_plugin_padim.detector import mahalanobis

        self.mahalanobis = mahalanobis
        self.detector = detector
        self.backbone = detector.extractor.network  # type: ignore[attr-defined]
        self.register_buffer("mean", detector.mean_.float())  # type: ignore[attr-defined]
        self.register_buffer("inv_covariance", detector.inv_covariance_.float())  # type: ignore[attr-defined]
        channels = detector.channels_.cpu()  # type: ignore[attr-defined]
        self.grid = tuple(detector.grid_)  # type: ignore[attr-defined]
        self.levels: list[int] = []  # levels holding part of the subset, each one's picks a buffer
        offset = 0
        for level, width in enumerate(detector.extractor.channels):  # type: ignore[attr-defined]
            local = channels[(channels >= offset) & (channels < offset + width)] - offset
            offset += width
            if local.numel():
                self.register_buffer(f"pick{level}", local)
                self.levels.append(level)
        self.sigma = float(detector.config.sigma)  # type: ignore[attr-defined]

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        levels = self.detector.extractor(images)  # type: ignore[attr-defined]
        parts = [F.interpolate(levels[i].index_select(1, getattr(self, f"pick{i}")), size=self.grid, mode="nearest")
                 for i in self.levels]
        batch = images.shape[0]
        embedding = torch.cat(parts, dim=1).permute(0, 2, 3, 1).reshape(batch, self.grid[0] * self.grid[1], -1)
        distances = self.mahalanobis(embedding, self.mean, self.inv_covariance)
        maps = upsample_maps(distances.reshape(batch, *self.grid), tuple(images.shape[-2:]))
        maps = gaussian_blur(maps, self.sigma)
        return maps.amax(dim=(1, 2)), maps


def _patchcore(detector: Detector) -> nn.Module:
    index = detector.config.index  # type: ignore[attr-defined]
    if index not in _EXACT_INDICES:
        raise ExportError(f"this PatchCore model searches its bank with the approximate '{index}' index; the "
                          f"graph searches exactly, so its scores would differ. Fit with index "
                          f"{' or '.join(_EXACT_INDICES)} to export")
    return PatchCoreGraph(detector)


_BUILDERS: dict[str, Callable[[Detector], nn.Module]] = {"patchcore": _patchcore, "padim": PaDiMGraph}


def graph_for(detector: Detector) -> nn.Module:
    """The module to export for a fitted detector (in eval mode), or ExportError saying why there is none."""
    if detector.name in NOT_EXPORTABLE:
        raise ExportError(f"{detector.name} cannot be exported to ONNX: {NOT_EXPORTABLE[detector.name]}; "
                          f"serve it with --engine torch")
    own = getattr(detector, "export_graph", None)
    if callable(own):
        graph = own()
    else:
        graph = _BUILDERS.get(detector.name, PredictGraph)(detector)
    return graph.eval()
