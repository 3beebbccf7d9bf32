"""The permutohedral lattice as fused CPU kernels (numba): densecrf's algorithm on every core.

:class:`CPULattice` filters exactly what :class:`.permutohedral.PermutohedralLattice` filters (the
embedding, rounding, barycentric weights, [1/2, 1, 1/2] blur and slicing constant of Krähenbühl's
densecrf), but each step is one compiled loop over points or vertices instead of a sequence of
tensor operations: the vertices are found with a hash table (one pass, not d + 1 sorts), splat
gathers each vertex's points (no atomics, no sparse matrix), and blur and slice run in parallel
over vertices and points. The PyTorch lattice stays the reference and the CUDA path; a test holds
the two to the same output.

Compiled code is cached (``cache=True``): in the package's ``__pycache__`` when it is writable,
else in numba's per-user cache (``NUMBA_CACHE_DIR`` or ``~/.cache``), so that a read-only install
(a Slicer extension folder) still compiles only once. The first call compiles, which takes seconds:
the Slicer module runs the engine in its own process, never on the GUI thread.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from numba import get_num_threads, njit, prange, set_num_threads
from torch import Tensor

from .permutohedral import key_bounds

__all__ = ["CPULattice"]

_EMPTY = -1
"""Hash-table slot without a key (keys are packed non-negative offsets)."""

_CHUNK = 4096
"""Points per parallel work item in the embedding (its scratch arrays are per item)."""


class CPULattice:
    """The lattice of ``features`` (``[N, d]`` on the CPU, in units of the Gaussian's standard
    deviation). Build once, then :meth:`filter` any number of times."""

    def __init__(self, features: Tensor) -> None:
        if features.ndim != 2 or features.shape[0] == 0 or features.shape[1] == 0:
            raise ValueError(f"features must have shape [N, d] with N, d > 0, got {tuple(features.shape)}")
        points = np.ascontiguousarray(features.detach().cpu().numpy(), dtype=np.float32)
        self.num_points, self.dim = points.shape
        d = self.dim
        q_low, q_sizes = key_bounds(features)
        # lattice coordinates are (d + 1) q + r, r in [-(d + 1), d]: one more q below the bounds
        low = (d + 1) * (q_low.cpu().numpy().astype(np.int64) - 1)
        sizes = [(d + 1) * (size + 2) for size in q_sizes]
        if math.prod(sizes) >= 2 ** 62:
            raise ValueError("the feature space is too large for the lattice's 64-bit keys; "
                             "use larger kernel widths or fewer image channels")
        strides = np.array([math.prod(sizes[i + 1:]) for i in range(d)], dtype=np.int64)
        scale = np.array([math.sqrt(2.0 / 3.0) * (d + 1) / math.sqrt((i + 1) * (i + 2))
                          for i in range(d)], dtype=np.float32)
        with _threads():
            keys, self._barycentric = _embed(points, scale, low, strides)
            self._vertex_of_entry, vertex_keys, table_keys, table_ids = _dedupe(keys.ravel())
            del keys
            self.num_vertices = len(vertex_keys)
            # the two blur neighbours along lattice direction a: every coordinate -1 / +1,
            # except +d / -d along a (direction d is the implicit coordinate: all -1 / +1)
            total = int(strides.sum())
            deltas = np.array([-total + (d + 1) * int(strides[a]) if a < d else -total
                               for a in range(d + 1)], dtype=np.int64)
            self._neighbours = _neighbours(vertex_keys, table_keys, table_ids, deltas)
            del vertex_keys, table_keys, table_ids
            self._starts, self._entries = _entries_by_vertex(self._vertex_of_entry,
                                                             self.num_vertices)
        self._alpha = np.float32(1.0 / (1.0 + 2.0 ** (-d)))  # densecrf's slicing constant

    def filter(self, values: Tensor) -> Tensor:
        """Gaussian-filter ``values`` (``[N, C]``, float32) over the features; ``[N, C]``."""
        if values.shape[0] != self.num_points:
            raise ValueError(f"expected {self.num_points} rows, got {values.shape[0]}")
        rows = np.ascontiguousarray(values.detach().cpu().numpy(), dtype=np.float32)
        with _threads():
            out = _filter(rows, self._barycentric, self._vertex_of_entry, self._starts,
                          self._entries, self._neighbours, self._alpha)
        return torch.from_numpy(out)


class _threads:
    """Run numba's parallel loops on as many threads as torch uses (``--threads``, the CLI's
    settings), restoring numba's count afterwards."""

    def __enter__(self) -> None:
        self._before = get_num_threads()
        set_num_threads(max(1, min(torch.get_num_threads(), self._before)))

    def __exit__(self, *exc: object) -> None:
        set_num_threads(self._before)


@njit(parallel=True, cache=True)
def _embed(points, scale, low, strides):
    """Packed keys ``[N, d + 1]`` of the d + 1 vertices of each point's enclosing simplex and
    its barycentric weights ``[N, d + 1]`` (densecrf's ``PermutohedralLattice::init``)."""
    n, d = points.shape
    keys = np.empty((n, d + 1), np.int64)
    barycentric = np.empty((n, d + 1), np.float32)
    down = np.float32(1.0 / (d + 1))
    for chunk in prange((n + _CHUNK - 1) // _CHUNK):
        elevated = np.empty(d + 1, np.float32)
        rem0 = np.empty(d + 1, np.int64)
        rank = np.empty(d + 1, np.int64)
        weights = np.empty(d + 2, np.float32)
        for k in range(chunk * _CHUNK, min(n, (chunk + 1) * _CHUNK)):
            total = np.float32(0.0)
            for j in range(d, 0, -1):
                cf = points[k, j - 1] * scale[j - 1]
                elevated[j] = total - j * cf
                total += cf
            elevated[0] = total
            rounded_sum = 0
            for i in range(d + 1):
                rounded = np.int64(np.round(down * elevated[i]))
                rem0[i] = rounded * (d + 1)
                rounded_sum += rounded
                rank[i] = 0
            for i in range(d):
                di = elevated[i] - rem0[i]
                for j in range(i + 1, d + 1):
                    if di < elevated[j] - rem0[j]:
                        rank[i] += 1
                    else:
                        rank[j] += 1
            for i in range(d + 1):  # back onto the plane sum = 0
                rank[i] += rounded_sum
                if rank[i] < 0:
                    rank[i] += d + 1
                    rem0[i] += d + 1
                elif rank[i] > d:
                    rank[i] -= d + 1
                    rem0[i] -= d + 1
            for i in range(d + 2):
                weights[i] = 0.0
            for i in range(d + 1):
                v = (elevated[i] - rem0[i]) * down
                weights[d - rank[i]] += v
                weights[d - rank[i] + 1] -= v
            weights[0] += 1.0 + weights[d + 1]
            for remainder in range(d + 1):
                key = np.int64(0)
                for i in range(d):
                    coordinate = rem0[i] + remainder
                    if rank[i] > d - remainder:
                        coordinate -= d + 1
                    key += (coordinate - low[i]) * strides[i]
                keys[k, remainder] = key
                barycentric[k, remainder] = weights[remainder]
    return keys, barycentric


@njit(inline="always")
def _slot(key, mask):
    """Fibonacci hashing of a packed key into a table of ``mask + 1`` slots."""
    mixed = np.uint64(key) * np.uint64(0x9E3779B97F4A7C15)
    return np.int64((mixed ^ (mixed >> np.uint64(29))) & np.uint64(mask))


@njit(cache=True)
def _dedupe(keys):
    """Vertex index of every entry of ``keys`` (first come, first numbered), the vertices' keys,
    and the hash table (keys, indices) that finds a vertex by key; the table doubles whenever it
    is half full."""
    capacity = 1 << 16
    table_keys = np.full(capacity, _EMPTY, np.int64)
    table_ids = np.empty(capacity, np.int32)
    vertex_keys = np.empty(capacity // 2 + 1, np.int64)
    vertex_of_entry = np.empty(len(keys), np.int32)
    count = 0
    for entry in range(len(keys)):
        key = keys[entry]
        mask = capacity - 1
        slot = _slot(key, mask)
        while True:
            held = table_keys[slot]
            if held == key:
                vertex_of_entry[entry] = table_ids[slot]
                break
            if held == _EMPTY:
                table_keys[slot] = key
                table_ids[slot] = count
                vertex_keys[count] = key
                vertex_of_entry[entry] = count
                count += 1
                break
            slot = (slot + 1) & mask
        if 2 * count > capacity:
            capacity *= 2
            mask = capacity - 1
            table_keys = np.full(capacity, _EMPTY, np.int64)
            table_ids = np.empty(capacity, np.int32)
            grown = np.empty(capacity // 2 + 1, np.int64)
            grown[:count] = vertex_keys[:count]
            vertex_keys = grown
            for vertex in range(count):
                slot = _slot(vertex_keys[vertex], mask)
                while table_keys[slot] != _EMPTY:
                    slot = (slot + 1) & mask
                table_keys[slot] = vertex_keys[vertex]
                table_ids[slot] = vertex
    return vertex_of_entry, vertex_keys[:count].copy(), table_keys, table_ids


@njit(parallel=True, cache=True)
def _neighbours(vertex_keys, table_keys, table_ids, deltas):
    """``[d + 1, 2, M]``: the vertex index of each vertex's neighbour at ``key + delta`` and
    ``key - delta`` along each lattice direction, M where there is none."""
    m = len(vertex_keys)
    mask = len(table_keys) - 1
    out = np.empty((len(deltas), 2, m), np.int32)
    for vertex in prange(m):
        for axis in range(len(deltas)):
            for side in range(2):
                key = vertex_keys[vertex] + (deltas[axis] if side == 0 else -deltas[axis])
                slot = _slot(key, mask)
                found = m
                while table_keys[slot] != _EMPTY:
                    if table_keys[slot] == key:
                        found = table_ids[slot]
                        break
                    slot = (slot + 1) & mask
                out[axis, side, vertex] = found
    return out


@njit(cache=True)
def _entries_by_vertex(vertex_of_entry, m):
    """The entries (point x d + 1 + remainder) of each vertex, in CSR form: ``starts`` [M + 1]
    and ``entries``, in increasing entry order within a vertex (a counting sort)."""
    starts = np.zeros(m + 1, np.int64)
    for vertex in vertex_of_entry:
        starts[vertex + 1] += 1
    for vertex in range(m):
        starts[vertex + 1] += starts[vertex]
    filled = starts[:m].copy()
    entries = np.empty(len(vertex_of_entry), np.int64)
    for entry in range(len(vertex_of_entry)):
        vertex = vertex_of_entry[entry]
        entries[filled[vertex]] = entry
        filled[vertex] += 1
    return starts, entries


@njit(parallel=True, cache=True)
def _filter(values, barycentric, vertex_of_entry, starts, entries, neighbours, alpha):
    """Splat ``values`` [N, C] onto the lattice (each vertex gathers its points), blur along
    the d + 1 directions ([1/2, 1, 1/2]), slice back to the points; ``[N, C]``."""
    n, channels = values.shape
    d1 = barycentric.shape[1]
    m = len(starts) - 1
    flat_weights = barycentric.reshape(-1)
    lattice = np.zeros((m + 1, channels), np.float32)  # row m: an absent neighbour, always 0
    blurred = np.zeros((m + 1, channels), np.float32)
    for vertex in prange(m):
        for at in range(starts[vertex], starts[vertex + 1]):
            entry = entries[at]
            point = entry // d1
            weight = flat_weights[entry]
            for c in range(channels):
                lattice[vertex, c] += weight * values[point, c]
    for axis in range(d1):
        for vertex in prange(m):
            below = neighbours[axis, 0, vertex]
            above = neighbours[axis, 1, vertex]
            for c in range(channels):
                blurred[vertex, c] = lattice[vertex, c] + np.float32(0.5) * (
                    lattice[below, c] + lattice[above, c])
        lattice, blurred = blurred, lattice
    out = np.empty((n, channels), np.float32)
    for point in prange(n):
        for c in range(channels):
            out[point, c] = 0.0
        for remainder in range(d1):
            entry = point * d1 + remainder
            vertex = vertex_of_entry[entry]
            weight = barycentric[point, remainder] * alpha
            for c in range(channels):
                out[point, c] += weight * lattice[vertex, c]
    return out
