"""Nearest-neighbour search for the memory-bank detectors (PatchCore, SPADE).

Three kinds of index share one ``search(queries, k, squared)`` call:

- ``"exact"``: brute force, one matrix product per cache-sized block (never more
  than ``chunk_bytes``). The product computes ``|b|²/2 - q·b`` (one pass less than
  the full expansion) and the chosen neighbours' distances are recomputed directly
  as ``|q - b|``, so they do not carry the expansion's cancellation error.
- ``"clustered"``: exact too, with fewer products, and the default of PatchCore and
  SPADE. The bank is cut into k-means cells; a cell is searched for a query only when
  a lower bound on its distance (ball radius, and the Voronoi half-space of the
  query's nearest centre) beats the k-th best distance found so far. Results are the
  same as ``"exact"``'s; a chunk of queries whose bounds leave more than half the bank
  to search (queries far from every cell) is searched by brute force instead.
  :class:`PartitionedRows` cuts a row set into cells once and indexes any union of
  its row groups (SPADE's per-image galleries) with one gather.
- ``"ivf"`` and ``"hnsw"``: faiss's approximate indices (``pip install
  adcore[ann]``). They can only miss a neighbour, so distances are over-estimates;
  calibrate thresholds with the same index.
"""

from __future__ import annotations

import math

import torch

from adcore.errors import ConfigError

__all__ = ["DEFAULT_CHUNK_BYTES", "INDEX_KINDS", "NeighbourIndex", "ExactIndex", "ClusteredIndex", "Cells",
           "PartitionedRows", "FaissIndex", "build_index", "default_cells", "kmeans"]

DEFAULT_CHUNK_BYTES = 64 * 2**20  # one float32 distance block; bounds search memory
INDEX_KINDS = ("exact", "clustered", "ivf", "hnsw")
_MARGIN = 1e-4  # relative slack on pruning bounds: float rounding must never prune the true neighbour
#: Brute-force blocks of (queries, bank rows): 8 MB stays in the cache, which doubles the matrix
#: products' throughput against 64 MB blocks (2 threads: 113 against 52 GFLOP/s).
_BLOCK_ROWS, _BLOCK_COLUMNS = 2048, 1024
#: Above this share of the bank still to search after the home cells, a chunk of queries is
#: searched by brute force: queries far from the bank prune little, and the cell visits'
#: smaller products cost about 1.7 times as much per distance as cache-sized brute force.
_DENSE_SHARE = 0.5


class NeighbourIndex:
    """Common interface: k nearest bank rows of every query, by Euclidean distance."""

    bank: torch.Tensor

    def search(self, queries: torch.Tensor, k: int = 1,
               squared: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Distances (Q, k) ascending (squared if asked) and bank indices (Q, k)."""
        k = min(k, self.bank.shape[0])
        sq, idx = self._search(queries.float().contiguous(), k)
        return (sq if squared else sq.sqrt()), idx

    def _search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


class ExactIndex(NeighbourIndex):
    """Brute-force search in bounded blocks of matrix products."""

    def __init__(self, bank: torch.Tensor, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> None:
        self.bank = bank.float().contiguous()
        self.half_sq = 0.5 * (self.bank * self.bank).sum(1)
        self.chunk_bytes = chunk_bytes

    def _search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = _blocked_topk(queries, self.bank, self.half_sq, k, self.chunk_bytes)
        return _refined(queries, self.bank, idx)


class ClusteredIndex(NeighbourIndex):
    """Exact search that skips k-means cells which cannot hold a nearer neighbour.

    Args:
        bank: (M, D) rows to search.
        cells: number of k-means cells (default :func:`default_cells`).
        seed: seeds k-means.
    """

    def __init__(self, bank: torch.Tensor, cells: int | None = None, seed: int = 0,
                 chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> None:
        bank = bank.float()
        centres, labels = kmeans(bank, cells or default_cells(bank.shape[0]), seed=seed)
        order = labels.argsort(stable=True)
        labels = labels[order]
        half_sq, spread = _row_stats(bank, order, labels, centres)
        self._setup(bank[order].contiguous(), order, labels, Cells(centres), half_sq, spread, chunk_bytes)

    @classmethod
    def from_sorted(cls, bank: torch.Tensor, order: torch.Tensor, labels: torch.Tensor, cells: "Cells",
                    half_sq: torch.Tensor, spread: torch.Tensor,
                    chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> "ClusteredIndex":
        """An index over rows already sorted by cell (``labels`` ascending), with their
        precomputed |b|²/2 and distances to their centres; ``order`` maps the rows to the
        caller's row numbers, which ``search`` returns."""
        index = cls.__new__(cls)
        index._setup(bank.float().contiguous(), order, labels, cells, half_sq, spread, chunk_bytes)
        return index

    def _setup(self, bank: torch.Tensor, order: torch.Tensor, labels: torch.Tensor, cells: "Cells",
               half_sq: torch.Tensor, spread: torch.Tensor, chunk_bytes: int) -> None:
        self.bank, self.order, self.cells, self.half_sq, self.chunk_bytes = bank, order, cells, half_sq, chunk_bytes
        counts = torch.bincount(labels, minlength=cells.count)
        self.offsets = torch.zeros(cells.count + 1, dtype=torch.long)
        self.offsets[1:] = counts.cumsum(0)
        self.radius = torch.zeros(cells.count).scatter_reduce_(0, labels, spread, "amax")
        self._bounds = list(zip(self.offsets[:-1].tolist(), self.offsets[1:].tolist()))
        self._sizes = counts.float()

    def _search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        rows = max(1, self.chunk_bytes // (4 * 4 * self.cells.count))  # a few (rows, cells) buffers
        best = torch.empty(queries.shape[0], k)
        best_idx = torch.empty(queries.shape[0], k, dtype=torch.long)
        for start in range(0, queries.shape[0], rows):
            chunk = queries[start: start + rows]
            best[start: start + rows], best_idx[start: start + rows] = self._search_chunk(chunk, k)
        sq, idx = _refined(queries, self.bank, best_idx)
        return sq, self.order[idx]

    def _search_chunk(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Nearest cell first (a tight k-th distance), then every cell whose bound beats it, or
        brute force when those cells hold most of the bank. Only the indices are used: the
        caller recomputes the chosen distances."""
        centre_sq = torch.addmm(self.cells.half_sq, queries, self.cells.centres.t(), alpha=-1.0)
        home = centre_sq.argmin(1)
        by_home = home.argsort()  # queries sorted by home cell: the first pass reads contiguous slices
        queries, centre_sq, home = queries[by_home], centre_sq[by_home], home[by_home]
        q_sq = (queries * queries).sum(1)
        centre_sq.mul_(2).add_(q_sq.unsqueeze(1)).clamp_min_(0)
        bound = self._lower_bounds(centre_sq, home)
        bound[torch.arange(queries.shape[0]), home] = math.inf  # home cells are searched first, once
        bound = bound.t().contiguous()  # (cells, Q): one row per cell
        best = torch.full((queries.shape[0], k), math.inf)
        best_idx = torch.zeros(queries.shape[0], k, dtype=torch.long)
        starts = torch.zeros(self.cells.count + 1, dtype=torch.long)
        starts[1:] = torch.bincount(home, minlength=self.cells.count).cumsum(0)
        for cell, (lo, hi) in enumerate(zip(starts[:-1].tolist(), starts[1:].tolist())):
            if hi > lo:
                self._visit(cell, slice(lo, hi), queries, q_sq, best, best_idx)
        left = (bound < best[:, -1] * (1 + _MARGIN)).float().sum(1) @ self._sizes
        if float(left) > _DENSE_SHARE * queries.shape[0] * self.bank.shape[0]:
            best_idx = _blocked_topk(queries, self.bank, self.half_sq, k, self.chunk_bytes)
        else:
            for cell in range(self.cells.count):
                wanted = (bound[cell] < best[:, -1] * (1 + _MARGIN)).nonzero().squeeze(1)
                if wanted.numel():
                    self._visit(cell, wanted, queries, q_sq, best, best_idx)
        restore = torch.empty_like(by_home)
        restore[by_home] = torch.arange(by_home.numel())
        return best[restore], best_idx[restore]

    def _lower_bounds(self, centre_sq: torch.Tensor, home: torch.Tensor) -> torch.Tensor:
        """Squared lower bounds (Q, cells) on the distance from each query to any row of a cell."""
        ball = (centre_sq.sqrt() - self.radius).clamp_min_(0)
        home_sq = centre_sq.gather(1, home.unsqueeze(1))
        gap = self.cells.gaps[home].mul_(2).clamp_min_(1e-12)
        half_space = (centre_sq - home_sq).div_(gap)  # distance to the bisector with the home centre
        return torch.maximum(ball, half_space).square_()

    def _visit(self, cell: int, rows: torch.Tensor | slice, queries: torch.Tensor, q_sq: torch.Tensor,
               best: torch.Tensor, best_idx: torch.Tensor) -> None:
        """Merge one cell's rows into the running k best of the queries ``rows``."""
        lo, hi = self._bounds[cell]
        if hi == lo:
            return
        block = torch.addmm(self.half_sq[lo:hi], queries[rows], self.bank[lo:hi].t(), alpha=-1.0)
        if best.shape[1] == 1:
            value, where = block.min(1, keepdim=True)
            value.mul_(2).add_(q_sq[rows].unsqueeze(1))  # |q - b|² = 2 (|b|²/2 - q·b) + |q|²
            closer = value < best[rows]
            best[rows] = torch.where(closer, value, best[rows])
            best_idx[rows] = torch.where(closer, where + lo, best_idx[rows])
            return
        block.mul_(2).add_(q_sq[rows].unsqueeze(1))
        merged = torch.cat([best[rows], block], 1)
        merged_idx = torch.cat([best_idx[rows], torch.arange(lo, hi).expand(block.shape[0], -1)], 1)
        value, where = merged.topk(best.shape[1], dim=1, largest=False)
        best[rows] = value
        best_idx[rows] = merged_idx.gather(1, where)


class Cells:
    """k-means centres and the distances between them: the geometry the pruning bounds use."""

    def __init__(self, centres: torch.Tensor) -> None:
        self.centres = centres.float().contiguous()
        self.count = self.centres.shape[0]
        self.half_sq = 0.5 * (self.centres * self.centres).sum(1)
        self.gaps = torch.cdist(self.centres, self.centres)


class PartitionedRows:
    """Rows cut into k-means cells once, so that an exact index over any union of row
    groups costs one gather, not a new partition (SPADE searches, per test image, the
    pixels of its K nearest training images).

    Args:
        rows: (N, D) rows, any float dtype (kept as given; gathered rows become float32).
        groups: (N,) group of every row, 0 .. G - 1 (SPADE: the training image).
        cells: number of k-means cells over all rows.
        seed: seeds k-means.
    """

    def __init__(self, rows: torch.Tensor, groups: torch.Tensor, cells: int, seed: int = 0,
                 chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> None:
        centres, labels = kmeans(rows, cells, seed=seed)
        self.rows, self.cells, self.chunk_bytes = rows, Cells(centres), chunk_bytes
        self.order = labels.argsort(stable=True)
        self.labels = labels[self.order]
        self.groups = groups[self.order]
        self.group_count = int(groups.max()) + 1 if groups.numel() else 0
        self.half_sq, self.spread = _row_stats(rows, self.order, self.labels, self.cells.centres)

    def index(self, chosen: torch.Tensor) -> ClusteredIndex:
        """Exact index over the rows of the groups ``chosen``; it returns row numbers of ``rows``."""
        wanted = torch.zeros(self.group_count, dtype=torch.bool)
        wanted[chosen] = True
        keep = wanted[self.groups].nonzero().squeeze(1)
        order = self.order[keep]
        return ClusteredIndex.from_sorted(torch.index_select(self.rows, 0, order), order, self.labels[keep], self.cells,
                                          self.half_sq[keep], self.spread[keep], self.chunk_bytes)


def default_cells(rows: int) -> int:
    """About sqrt(rows / 10) cells: a query pays one product per cell centre plus the rows of
    the cells it visits (typically a tenth of the bank), and sqrt(visited · rows) balances the two."""
    return max(1, round(math.sqrt(rows / 10)))


def _row_stats(rows: torch.Tensor, order: torch.Tensor, labels: torch.Tensor,
               centres: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """|b|²/2 and |b - its centre| of the rows ``rows[order]`` (labelled ``labels``), in
    bounded float32 blocks (``rows`` may be float16)."""
    step = max(1, DEFAULT_CHUNK_BYTES // (4 * max(1, rows.shape[1])))
    half_sq, spread = [torch.zeros(0)], [torch.zeros(0)]
    for lo in range(0, order.numel(), step):
        block = rows[order[lo: lo + step]].float()
        half_sq.append(0.5 * block.square().sum(1))
        spread.append((block - centres[labels[lo: lo + step]]).norm(dim=1))
    return torch.cat(half_sq), torch.cat(spread)


class FaissIndex(NeighbourIndex):
    """faiss's approximate IVF-Flat or HNSW-Flat index (over-estimates distances it misses)."""

    def __init__(self, bank: torch.Tensor, kind: str, seed: int = 0, nprobe: int = 8, ef_search: int = 64) -> None:
        faiss = _import_faiss()
        self.bank = bank.float().contiguous()
        data = self.bank.numpy()
        dim = data.shape[1]
        if kind == "ivf":
            lists = max(1, min(int(4 * math.sqrt(data.shape[0])), data.shape[0] // 39))
            self.index = faiss.IndexIVFFlat(faiss.IndexFlatL2(dim), dim, lists)
            self.index.cp.seed = seed
            self.index.train(data)
            self.index.nprobe = min(nprobe, lists)
        else:
            self.index = faiss.IndexHNSWFlat(dim, 32)
            self.index.hnsw.efSearch = ef_search
        self.index.add(data)

    def _search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        sq, idx = self.index.search(queries.numpy(), k)
        idx = torch.from_numpy(idx).clamp_min_(0)  # -1 marks a missing neighbour (fewer rows probed than k)
        return _refined(queries, self.bank, idx)


def build_index(bank: torch.Tensor, kind: str = "exact", seed: int = 0) -> NeighbourIndex:
    """The index of ``kind`` (one of :data:`INDEX_KINDS`) over ``bank``."""
    if kind == "exact":
        return ExactIndex(bank)
    if kind == "clustered":
        return ClusteredIndex(bank, seed=seed)
    if kind in ("ivf", "hnsw"):
        return FaissIndex(bank, kind, seed=seed)
    raise ConfigError(f"unknown index {kind!r}; expected one of {', '.join(INDEX_KINDS)}")


def kmeans(points: torch.Tensor, cells: int, iterations: int = 8, seed: int = 0,
           sample: int = 65536) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means on a sample; centres (cells, D) and every point's nearest centre (N,)."""
    generator = torch.Generator().manual_seed(seed)
    cells = min(cells, points.shape[0])
    train = points[torch.randperm(points.shape[0], generator=generator)[: max(sample, cells)]].float()
    centres = train[:cells].clone()
    for _ in range(iterations):
        labels = _nearest_centre(train, centres)
        sums = torch.zeros_like(centres).index_add_(0, labels, train)
        counts = torch.bincount(labels, minlength=cells)
        filled = counts > 0
        centres[filled] = sums[filled] / counts[filled].unsqueeze(1)
    return centres, _nearest_centre(points, centres)


def _nearest_centre(points: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Index of each point's nearest centre, in bounded blocks."""
    half_sq = 0.5 * (centres * centres).sum(1)
    return _blocked_topk(points, centres, half_sq, 1, DEFAULT_CHUNK_BYTES).squeeze(1)


def _blocked_topk(queries: torch.Tensor, bank: torch.Tensor, half_sq: torch.Tensor, k: int,
                  chunk_bytes: int) -> torch.Tensor:
    """Indices (Q, k) of the k smallest ``|b|²/2 - q·b``, never holding more than ``chunk_bytes`` of them."""
    width = max(k, min(bank.shape[0], _BLOCK_COLUMNS, chunk_bytes // (4 * 256)))  # bank columns per block
    rows = max(1, min(_BLOCK_ROWS, chunk_bytes // (4 * width)))
    idx = torch.empty(queries.shape[0], k, dtype=torch.long)
    for start in range(0, queries.shape[0], rows):
        q = queries[start: start + rows].float()  # a float16 gallery is converted block by block
        if k == 1:
            idx[start: start + rows, 0] = _nearest_in_blocks(q, bank, half_sq, width)
            continue
        value = index = None
        for lo in range(0, bank.shape[0], width):
            block = torch.addmm(half_sq[lo: lo + width], q, bank[lo: lo + width].t(), alpha=-1.0)
            v, i = block.topk(k, dim=1, largest=False)
            value, index = _merge(value, index, v, i + lo, k)
        idx[start: start + rows] = index
    return idx


def _nearest_in_blocks(q: torch.Tensor, bank: torch.Tensor, half_sq: torch.Tensor, width: int) -> torch.Tensor:
    """Index of each query's nearest bank row: block minima by value first (a minimum without
    its index is an order of magnitude cheaper), then the index inside each query's winning block."""
    best = torch.full((q.shape[0],), math.inf)
    winner = torch.zeros(q.shape[0], dtype=torch.long)
    for block_no, lo in enumerate(range(0, bank.shape[0], width)):
        value = torch.addmm(half_sq[lo: lo + width], q, bank[lo: lo + width].t(), alpha=-1.0).amin(1)
        closer = value < best
        best = torch.where(closer, value, best)
        winner.masked_fill_(closer, block_no)
    nearest = torch.empty(q.shape[0], dtype=torch.long)
    for block_no in winner.unique().tolist():
        rows = (winner == block_no).nonzero().squeeze(1)
        lo = block_no * width
        block = torch.addmm(half_sq[lo: lo + width], q[rows], bank[lo: lo + width].t(), alpha=-1.0)
        nearest[rows] = block.argmin(1) + lo
    return nearest


def _merge(value: torch.Tensor | None, index: torch.Tensor | None, new_value: torch.Tensor,
           new_index: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k smallest of two (rows, ·) candidate sets."""
    if value is None or index is None:
        return new_value, new_index
    value, index = torch.cat([value, new_value], 1), torch.cat([index, new_index], 1)
    best, where = value.topk(k, dim=1, largest=False)
    return best, index.gather(1, where)


def _refined(queries: torch.Tensor, bank: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared distances |q - b|² of the chosen rows computed directly, re-sorted ascending."""
    sq = (queries.unsqueeze(1) - bank[idx]).square_().sum(2)
    sq, order = sq.sort(dim=1)
    return sq, idx.gather(1, order)


def _import_faiss():  # type: ignore[no-untyped-def]
    """faiss, or a one-line ConfigError saying how to install it."""
    try:
        import faiss
    except ImportError:
        raise ConfigError("approximate indices need faiss: pip install adcore[ann]") from None
    return faiss
