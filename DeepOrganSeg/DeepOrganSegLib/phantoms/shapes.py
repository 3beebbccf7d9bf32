"""Solid primitives in patient millimetres, the building blocks of the parametric anatomy.

A :class:`Shape` is a bounding box (mm) plus an inside test evaluated on a :class:`View`: the
*deformed* coordinates of the voxels inside that box, so that one smooth displacement field bends
every organ alike. Organs are ellipsoids, chains of capsules along a Catmull-Rom spline
(:func:`tube`), or any box with a custom inside test (:func:`solid`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from numpy.typing import ArrayLike

from .geometry import unit


@dataclass(frozen=True)
class View:
    """Deformed coordinates (mm) of the voxels inside one bounding box, and the box's slices."""

    x: np.ndarray
    y: np.ndarray
    z: np.ndarray
    box: tuple[slice, slice, slice]


@dataclass(frozen=True)
class Shape:
    """A solid in patient mm: a bounding box and an inside test on deformed coordinates."""

    lo: np.ndarray
    hi: np.ndarray
    inside: Callable[[View], np.ndarray]

    def where(self, predicate: Callable[[View], np.ndarray]) -> "Shape":
        """The part of the shape where ``predicate`` holds."""
        return Shape(self.lo, self.hi, lambda v: self.inside(v) & predicate(v))


def ellipsoid(centre: ArrayLike, semi: ArrayLike,
              axes: np.ndarray | None = None) -> Shape:
    """Ellipsoid with semi-axes (mm) along the columns of ``axes`` (default x, y, z)."""
    c = np.asarray(centre, dtype=np.float32)
    s = np.asarray(semi, dtype=np.float32)
    if axes is None:
        def inside(v: View) -> np.ndarray:
            return (((v.x - c[0]) / s[0]) ** 2 + ((v.y - c[1]) / s[1]) ** 2
                    + ((v.z - c[2]) / s[2]) ** 2) <= 1.0
        half = s
    else:
        r = (np.asarray(axes, dtype=np.float32) / s[None, :])  # column a: axis_a / semi_a

        def inside(v: View) -> np.ndarray:
            dx, dy, dz = v.x - c[0], v.y - c[1], v.z - c[2]
            total = (dx * r[0, 0] + dy * r[1, 0] + dz * r[2, 0]) ** 2
            total += (dx * r[0, 1] + dy * r[1, 1] + dz * r[2, 1]) ** 2
            total += (dx * r[0, 2] + dy * r[1, 2] + dz * r[2, 2]) ** 2
            return total <= 1.0
        half = np.sqrt(((np.asarray(axes) * s[None, :]) ** 2).sum(axis=1))
    return Shape(c - half, c + half, inside)


def capsule(p0: np.ndarray, p1: np.ndarray, r0: float, r1: float) -> Shape:
    """Segment ``p0``-``p1`` swept by a sphere whose radius (mm) goes linearly from r0 to r1."""
    p0 = np.asarray(p0, dtype=np.float32)
    d = np.asarray(p1, dtype=np.float32) - p0
    length2 = max(float(d @ d), 1e-6)

    def inside(v: View) -> np.ndarray:
        ex, ey, ez = v.x - p0[0], v.y - p0[1], v.z - p0[2]
        t = np.clip((ex * d[0] + ey * d[1] + ez * d[2]) / length2, 0.0, 1.0)
        ex -= t * d[0]
        ey -= t * d[1]
        ez -= t * d[2]
        radius = r0 + t * (r1 - r0)
        return ex * ex + ey * ey + ez * ez <= radius * radius
    r = max(r0, r1)
    return Shape(np.minimum(p0, p0 + d) - r, np.maximum(p0, p0 + d) + r, inside)


def centre_line(points: Sequence[ArrayLike] | np.ndarray, radii: ArrayLike,
            step_mm: float = 8.0) -> tuple[np.ndarray, np.ndarray]:
    """Catmull-Rom curve through ``points`` sampled about every ``step_mm``; radii interpolated."""
    p = np.asarray(points, dtype=float)
    r = np.asarray(radii, dtype=float)
    padded = np.vstack([2 * p[0] - p[1], p, 2 * p[-1] - p[-2]])
    out_p, out_r = [], []
    for s in range(len(p) - 1):
        a, b, c, d = padded[s:s + 4]
        n = max(1, int(np.ceil(np.linalg.norm(c - b) / step_mm)))
        t = (np.arange(n) / n)[:, None]
        out_p.append(0.5 * ((2 * b) + (-a + c) * t + (2 * a - 5 * b + 4 * c - d) * t ** 2
                            + (-a + 3 * b - 3 * c + d) * t ** 3))
        out_r.append(r[s] + (r[s + 1] - r[s]) * t[:, 0])
    out_p.append(p[-1:])
    out_r.append(r[-1:])
    return np.vstack(out_p), np.concatenate(out_r)


def tube(points: Sequence[ArrayLike] | np.ndarray, radii: ArrayLike,
         step_mm: float = 10.0) -> list[Shape]:
    """A tube along a smooth curve through ``points``, as a chain of capsules (radii in mm)."""
    radii = np.broadcast_to(np.asarray(radii, dtype=float), (len(points),))
    p, r = centre_line(points, radii, step_mm)
    return [capsule(p[s], p[s + 1], r[s], r[s + 1]) for s in range(len(p) - 1)]


def axial_curve(points: Sequence[ArrayLike] | np.ndarray, step_mm: float = 2.0
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """z, x and y (mm) of the smooth curve through ``points`` (which rise in z), ordered by z:
    for ``np.interp`` of the curve's axial centre at any height."""
    p, _ = centre_line(points, np.zeros(len(points)), step_mm)
    p = p[np.argsort(p[:, 2])]
    return p[:, 2], p[:, 0], p[:, 1]


def flattened_tube(points: Sequence[ArrayLike] | np.ndarray, semi_lr_mm: float,
                   semi_ap_mm: float, angle: float) -> Shape:
    """A tube whose axial sections are ellipses (semi-axes in mm; the first turned ``angle``
    radians from left-right towards posterior) centred on the curve through ``points``, which
    rise in z: a vessel flattened front to back, as the cava often is. Its ends are flat."""
    z_line, x_line, y_line = axial_curve(points)
    cos, sin = np.float32(np.cos(angle)), np.float32(np.sin(angle))

    def inside(v: View) -> np.ndarray:
        dx = v.x - np.interp(v.z, z_line, x_line).astype(np.float32)
        dy = v.y - np.interp(v.z, z_line, y_line).astype(np.float32)
        along, across = dx * cos + dy * sin, dy * cos - dx * sin
        return (((along / semi_lr_mm) ** 2 + (across / semi_ap_mm) ** 2 <= 1.0)
                & (v.z >= z_line[0]) & (v.z <= z_line[-1]))
    reach = max(semi_lr_mm, semi_ap_mm)
    lo = [x_line.min() - reach, y_line.min() - reach, z_line[0]]
    hi = [x_line.max() + reach, y_line.max() + reach, z_line[-1]]
    return solid(lo, hi, inside)


def solid(lo: ArrayLike, hi: ArrayLike, inside: Callable[[View], np.ndarray]) -> Shape:
    """The voxels of the box [``lo``, ``hi``] (mm) where ``inside`` holds."""
    return Shape(np.asarray(lo, dtype=np.float32), np.asarray(hi, dtype=np.float32), inside)


def random_walk(rng: np.random.Generator, start: np.ndarray, centre: np.ndarray,
                semi: np.ndarray, steps: int, step_mm: float) -> np.ndarray:
    """A persistent random walk (points, mm) that turns back whenever it leaves an ellipsoid."""
    kicks = rng.normal(0.0, 0.45, (steps, 3))
    points = np.empty((steps + 1, 3))
    points[0] = start
    direction = unit(rng.normal(size=3))
    for n in range(steps):
        direction = direction + kicks[n]
        direction /= np.sqrt(direction @ direction)
        outward = (points[n] + direction * step_mm - centre) / semi
        if outward @ outward > 1.0:
            direction = unit(direction - 1.5 * unit(outward / semi))
        points[n + 1] = points[n] + direction * step_mm
    return points
