"""Permutohedral lattice: fast Gaussian filtering in a d-dimensional feature space, in PyTorch.

``PermutohedralLattice(features).filter(values)`` approximates, for every point ``i``,

    out_i = sum_j exp(-|f_i - f_j|^2 / 2) * values_j

in O(N d) instead of O(N^2) (Adams, Baek & Davis, Eurographics 2010). The embedding, rounding,
barycentric weights, the [1/2, 1, 1/2] blur along the d + 1 lattice directions and the slicing
constant follow Krähenbühl's densecrf (the code behind pydensecrf), so that our filter and theirs
agree to float rounding. What differs is how the lattice is stored: instead of a hash table walked
point by point, the vertices are found by sorting packed integer keys, splat and slice are sparse
(CSR) matrix products and the blur gathers neighbours. The same code therefore runs on CPU (MKL)
and CUDA (cuSPARSE), and the construction is paid once: :meth:`filter` reuses it for any number of
value channels and calls.

Every vertex belongs to one of d + 1 remainder classes, and a point has exactly one vertex in each.
The keys are packed remainder first, so the vertices are sorted class by class and each class is
sorted on its own: d + 1 sorts of N keys, cheaper and smaller than one of N (d + 1). Splat and
slice are the same N x M matrix of barycentric weights, stored both ways (products with a
transposed sparse matrix are slow in torch): 16 (d + 1) bytes per point.
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor

__all__ = ["PermutohedralLattice"]

_CHUNK_POINTS = 1 << 18
"""Points embedded at once; bounds the temporary memory of the construction (about 50 MB)."""

_KEY_MARGIN = 3
"""Lattice cells added on each side of the features' bounding box when packing keys: one for the
re-projection onto the plane, one for the vertex offsets, one for the blur neighbours."""


class PermutohedralLattice:
    """The lattice of ``features`` (shape ``[N, d]``, in units of the Gaussian's standard deviation).

    Build once per feature set, then call :meth:`filter` as often as needed. All tensors live on
    the features' device.
    """

    def __init__(self, features: Tensor, *, chunk_points: int = _CHUNK_POINTS) -> None:
        if features.ndim != 2 or features.shape[0] == 0 or features.shape[1] == 0:
            raise ValueError(f"features must have shape [N, d] with N, d > 0, got {tuple(features.shape)}")
        features = features.to(torch.float32)
        self.num_points, self.dim = features.shape
        self.device = features.device
        d, n = self.dim, self.num_points
        q_low, q_sizes = _key_bounds(features)
        self._radix = _MixedRadix([d + 1] + q_sizes, self.device)
        keys, barycentric = self._embed(features, q_low, chunk_points)

        index_dtype = _index_dtype((d + 1) * n)
        # [d + 1, N] views of [N, d + 1] storage: the slice matrix's rows without a transpose
        vertex_of_entry = torch.empty(n, d + 1, dtype=index_dtype, device=self.device).t()
        splat_columns = torch.empty(d + 1, n, dtype=index_dtype, device=self.device)
        splat_weights = torch.empty(d + 1, n, dtype=torch.float32, device=self.device)
        row_starts: list[Tensor] = []
        vertex_keys: list[Tensor] = []
        for r in range(d + 1):  # one remainder class at a time
            sorted_keys, order = torch.sort(keys[r], stable=True)
            first = torch.ones(n, dtype=torch.bool, device=self.device)
            torch.ne(sorted_keys[1:], sorted_keys[:-1], out=first[1:])
            offset: int = sum((len(k) for k in vertex_keys), 0)
            vertex_keys.append(sorted_keys[first])
            vertex_of_entry[r].index_copy_(0, order,
                                           first.cumsum(0, dtype=index_dtype).add_(offset - 1))
            row_starts.append(first.nonzero().squeeze(1).add_(r * n))
            splat_columns[r] = order
            torch.index_select(barycentric[r], 0, order, out=splat_weights[r])
        del keys, sorted_keys, order, first
        self.num_vertices = sum(len(k) for k in vertex_keys)
        row_starts.append(torch.tensor([(d + 1) * n], device=self.device))
        self._splat = _csr(torch.cat(row_starts), splat_columns.view(-1), splat_weights.view(-1),
                           (self.num_vertices, n))
        del splat_columns, splat_weights, row_starts
        alpha = 1.0 / (1.0 + 2.0 ** (-d))  # densecrf's slicing constant
        self._slice = _csr(torch.arange(0, (d + 1) * n + 1, d + 1, device=self.device),
                           vertex_of_entry.t().reshape(-1), barycentric.t().reshape(-1).mul_(alpha),
                           (n, self.num_vertices))
        del vertex_of_entry, barycentric
        self._neighbours = [self._neighbours_along(vertex_keys, axis) for axis in range(d + 1)]
        del vertex_keys

    def filter(self, values: Tensor) -> Tensor:
        """Gaussian-filter ``values`` (shape ``[N, C]``, float32, row-major is fastest) over the
        features; returns ``[N, C]``."""
        if values.shape[0] != self.num_points:
            raise ValueError(f"expected {self.num_points} rows, got {values.shape[0]}")
        m = self.num_vertices
        # two lattice buffers whose extra row M stands for absent neighbours and stays zero
        lattice, blurred = values.new_zeros(2, m + 1, values.shape[1]).unbind()
        torch.mm(self._splat, values, out=lattice[:m])
        neighbour = values.new_empty(m, values.shape[1])
        for down, up in self._neighbours:  # blur with [1/2, 1, 1/2] along each lattice direction
            torch.index_select(lattice, 0, down, out=blurred[:m])
            torch.index_select(lattice, 0, up, out=neighbour)
            blurred[:m].add_(neighbour).mul_(0.5).add_(lattice[:m])
            lattice, blurred = blurred, lattice
        return self._slice @ lattice[:m]

    def _embed(self, features: Tensor, q_low: Tensor, chunk_points: int) -> tuple[Tensor, Tensor]:
        """Packed keys of the d + 1 vertices of each point's enclosing simplex and the point's
        barycentric weights, both ``[d + 1, N]`` (row r: the vertex of remainder r; the weights
        are a view of ``[N, d + 1]`` storage)."""
        d = self.dim
        keys = torch.empty(d + 1, self.num_points, dtype=self._radix.dtype, device=self.device)
        barycentric = torch.empty(self.num_points, d + 1, dtype=torch.float32,
                                  device=self.device).t()
        elevation = _elevation_matrix(d, self.device)
        remainder_stride, *q_strides = self._radix.strides
        # stride of each coordinate's q digit; the implicit coordinate d has none
        coordinate_strides = torch.cat([torch.stack(q_strides), q_strides[0].new_zeros(1)])
        remainder_offsets = torch.arange(d + 1, device=self.device)[:, None] * remainder_stride
        for start in range(0, self.num_points, chunk_points):
            chunk = slice(start, start + chunk_points)
            elevated = elevation @ features[chunk].t()  # [d + 1, n], on the plane sum = 0
            q, by_rank = _enclosing_simplex(elevated)
            # coordinate offsets from the remainder-0 vertex, largest first
            offsets = (elevated - (d + 1) * q).mul_(1.0 / (d + 1)).gather(0, by_rank).flip(0)
            barycentric[:, chunk] = torch.cat([1.0 + offsets[:1] - offsets[d:],
                                               offsets[1:] - offsets[:-1]])
            # Vertex r of the simplex has coordinates (d + 1) q_i + r, less d + 1 for the r
            # coordinates of lowest rank (densecrf's "canonical simplex").
            lowered = coordinate_strides.index_select(0, by_rank.view(-1)).view_as(by_rank)
            lowered = lowered.flip(0).cumsum(0, dtype=lowered.dtype)
            base = self._radix.pack(q[:d] - q_low[:, None], q_strides)
            keys[0, chunk] = base
            keys[1:, chunk] = base + remainder_offsets[1:] - lowered[:d]
        return keys, barycentric

    def _neighbours_along(self, vertex_keys: list[Tensor], axis: int) -> tuple[Tensor, Tensor]:
        """Both neighbours of every vertex along lattice direction ``axis`` (``M`` if absent),
        from the sorted vertex keys of each remainder class (in vertex order)."""
        d, m = self.dim, self.num_vertices
        remainder_stride, *q_strides = (int(s) for s in self._radix.strides)
        along = q_strides[axis] if axis < d else 0
        starts = [0]
        for keys in vertex_keys:
            starts.append(starts[-1] + len(keys))
        # "Up": every coordinate + 1, except - d along the axis. From remainder r < d that is the
        # vertex of remainder r + 1 with q_axis - 1; from remainder d, the vertex of remainder 0
        # with every other q_i + 1. It is searched in that class only; "down" is the inverse.
        up_parts: list[Tensor] = []
        for r, keys in enumerate(vertex_keys):
            target = (r + 1) % (d + 1)
            shift = remainder_stride if r < d else sum(q_strides) - d * remainder_stride
            key = keys + (shift - along)
            found = torch.searchsorted(vertex_keys[target], key).clamp_(max=len(vertex_keys[target]) - 1)
            hit = vertex_keys[target].index_select(0, found) == key
            up_parts.append(torch.where(hit, found + starts[target], m))
        up = torch.cat(up_parts)
        down = torch.full((m + 1,), m, dtype=up.dtype, device=self.device)
        down.scatter_(0, up, torch.arange(m, device=self.device))  # absent "up"s all land on m
        index_dtype = _index_dtype(m + 1)
        return down[:m].to(index_dtype), up.to(index_dtype)


class _MixedRadix:
    """Packs integer digits ``0 <= digit < size`` into one integer key (int32 where it fits);
    the first digit is the most significant, so keys sort like the digit tuples."""

    def __init__(self, sizes: list[int], device: torch.device) -> None:
        if math.prod(sizes) >= 2 ** 63:
            raise ValueError("the feature space is too large for the lattice's 64-bit keys; "
                             "use larger kernel widths or fewer image channels")
        self.dtype = _index_dtype(math.prod(sizes))
        self.strides = torch.tensor([math.prod(sizes[i + 1:]) for i in range(len(sizes))],
                                    dtype=self.dtype, device=device)

    def pack(self, digits: Tensor, strides: list[Tensor]) -> Tensor:
        """Keys of ``digits`` ``[k, n]`` (float or integer) weighted by ``strides`` (k of them)."""
        keys = torch.zeros(digits.shape[1], dtype=self.dtype, device=digits.device)
        for digit, stride in zip(digits.to(self.dtype), strides):
            keys += digit * stride
        return keys


def _elevation_matrix(d: int, device: torch.device) -> Tensor:
    """Matrix ``[d + 1, d]`` mapping features onto the plane sum(x) = 0 of the lattice (Adams et
    al.'s E with densecrf's scaling, which gives the blur a unit standard deviation)."""
    i = torch.arange(d, dtype=torch.float64)
    scale = math.sqrt(2.0 / 3.0) * (d + 1) / torch.sqrt((i + 1) * (i + 2))
    elevation = torch.triu(scale.expand(d + 1, d))  # row j: sum_{i >= j} scale_i f_i ...
    elevation[1:] -= torch.diag(torch.arange(1, d + 1, dtype=torch.float64) * scale)  # - j scale_{j-1} f_{j-1}
    return elevation.float().to(device)


def _enclosing_simplex(elevated: Tensor) -> tuple[Tensor, Tensor]:
    """For elevated points ``[d + 1, n]``: the remainder-0 vertex of the enclosing simplex (as
    ``q``, coordinates (d + 1) q, float32) and the coordinates ordered by decreasing offset from
    it (``by_rank[k]`` = the coordinate of rank k, int64), as densecrf ranks them."""
    d = elevated.shape[0] - 1
    q = torch.round(elevated * (1.0 / (d + 1)))  # nearest point of (d + 1) Z^(d + 1)
    rank = _rank(elevated - (d + 1) * q)
    # Bring points whose rounding left the plane sum = 0 back onto it: |sum(q)| <= (d + 1) / 2,
    # so each rank wraps around at most once.
    rank += q.sum(0).to(rank.dtype)
    shift = (rank < 0).to(rank.dtype) - (rank > d).to(rank.dtype)
    rank.add_(shift, alpha=d + 1)
    q += shift
    coordinates = torch.arange(d + 1, device=elevated.device)[:, None].expand(d + 1, rank.shape[1])
    return q, torch.empty_like(coordinates).scatter_(0, rank.long(), coordinates)


def _rank(residual: Tensor) -> Tensor:
    """Descending rank of each coordinate ``[d + 1, n]`` (int32); of two equal coordinates the
    later one ranks lower, as in densecrf."""
    rank = torch.zeros(residual.shape, dtype=torch.int32, device=residual.device)
    for i in range(len(residual)):
        for j in range(i + 1, len(residual)):
            j_greater = residual[i] < residual[j]
            rank[i] += j_greater
            rank[j] += ~j_greater
    return rank


def _key_bounds(features: Tensor) -> tuple[Tensor, list[int]]:
    """Lowest lattice coordinate ``q`` (``[d]``) and the number of values per coordinate that
    hold every vertex and blur neighbour of ``features``, by interval arithmetic on the elevation."""
    d = features.shape[1]
    low, high = (bound.double().cpu() for bound in torch.aminmax(features, dim=0))
    elevation = _elevation_matrix(d, torch.device("cpu")).double()
    ends = torch.stack([elevation * low, elevation * high])  # [2, d + 1, d]
    elevated_low, elevated_high = ends.amin(0).sum(1)[:d], ends.amax(0).sum(1)[:d]
    q_low = torch.floor(elevated_low / (d + 1)).long() - _KEY_MARGIN
    q_high = torch.ceil(elevated_high / (d + 1)).long() + _KEY_MARGIN
    return q_low.to(features.device), (q_high - q_low + 1).tolist()


def _index_dtype(count: int) -> torch.dtype:
    return torch.int32 if count < 2 ** 31 else torch.int64


def _csr(crow: Tensor, columns: Tensor, values: Tensor, size: tuple[int, int]) -> Tensor:
    dtype = _index_dtype(max(len(columns), size[1]))
    with warnings.catch_warnings():  # "sparse CSR support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow.to(dtype), columns.to(dtype), values.float(), size,
                                       check_invariants=False)
