"""The scanner: where and how finely a case is sampled, and how the image is formed on it.

:func:`choose_acquisition` picks the output grid (field of view in mm, voxel spacing, slice
thickness) and whether the scene is rendered three times finer through-plane (thick slices).
:func:`acquire` then turns an intensity map on that render grid into the scanner's image: slice
profile (a box of the slice thickness), in-plane point-spread function, downsampling (partial
volume), and noise: correlated Gaussian noise in HU for CT (or, in a low-dose scan, the coarser,
non-stationary and streaky noise of :func:`low_dose_noise`), a bias field and Rician noise for
MR, or the SynthSeg corruption (bias, noise, gamma, rescaled to [0, 1]).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, cast

import numpy as np
from scipy import ndimage as ndi

from .fields import upsample
from .geometry import Grid
from .scan import LowDose


@dataclass(frozen=True)
class Acquisition:
    """Where and how finely a case is sampled."""

    grid: Grid
    thickness: float  # slice thickness (FWHM-equivalent box), mm
    subslices: int  # 1 or 3 render sub-slices per output slice


def choose_acquisition(rng: np.random.Generator, default_shape: tuple[int, int, int],
                       fov_range: tuple[tuple[float, float], ...], centre: np.ndarray,
                       shape: tuple[int, int, int] | None,
                       spacing: tuple[float, float, float] | None) -> Acquisition:
    """Grid from the user's shape/spacing, filling the gaps from a random field of view (mm).

    ``fov_range`` gives (low, high) extents in mm along x, y, z. With no spacing the grid spans a
    random field of view and the slice thickness is drawn from 0.7-5 mm; with a spacing the slices
    are contiguous (thickness = slice spacing).
    """
    fov = np.array([rng.uniform(lo, hi) for lo, hi in fov_range])
    fov[1] = fov[0] if fov_range[0] == fov_range[1] else fov[1]
    thickness = float(rng.uniform(0.7, 5.0))
    if spacing is None:
        shape = shape or default_shape
        spacing_xyz = fov / np.array(shape[::-1])
    else:
        spacing_xyz = np.asarray(spacing, dtype=float)
        if shape is None:
            mid = np.array([(lo + hi) / 2 for lo, hi in fov_range])
            shape = cast("tuple[int, int, int]",  # one size per axis (x, y, z) of fov_range
                         tuple(int(v) for v in np.clip(np.round(mid / spacing_xyz), 16, 512)[::-1]))
        thickness = float(spacing_xyz[2])
    in_plane = float(min(spacing_xyz[0], spacing_xyz[1]))
    subslices = 3 if spacing_xyz[2] >= 2.0 * in_plane else 1
    grid = Grid.centred(shape, spacing_xyz, centre)
    return Acquisition(grid, thickness, subslices)


@dataclass
class Scene:
    """What a kind's builder hands to image synthesis: its acquisition and, on the acquisition's
    render grid, the tissue and organ maps (ids of :mod:`.labels`)."""

    acquisition: Acquisition
    tissue: np.ndarray
    organ: np.ndarray
    region_of: Callable[[float], int] | None = None
    fractions: dict[str, np.ndarray] | None = None  # brain: tissue probabilities (partial volume)
    arms_down: bool = False


def acquire(image: np.ndarray, acquisition: Acquisition, rng: np.random.Generator,
            modality: str, synthseg: bool, low_dose: LowDose | None = None) -> np.ndarray:
    """Slice profile, in-plane PSF, downsampling (partial volume), bias field and noise (CT:
    low-dose noise when ``low_dose`` says so)."""
    n = acquisition.subslices
    dz = acquisition.grid.spacing[2] / n
    sigma_z = max(acquisition.thickness, dz) / np.sqrt(12.0) / dz
    psf_sigma = rng.uniform(0.3, 1.2) if synthseg else rng.uniform(0.4, 0.7)
    if n == 1:
        image = ndi.gaussian_filter(image, (sigma_z, psf_sigma, psf_sigma), truncate=3.0)
    else:
        image = ndi.gaussian_filter1d(image, sigma_z, axis=0, truncate=3.0)
        image = np.ascontiguousarray(image[n // 2::n])
        image = ndi.gaussian_filter(image, (0.0, psf_sigma, psf_sigma), truncate=3.0)
    grid = acquisition.grid
    if synthseg:
        return _synthseg_corruption(image, grid, rng)
    if modality == "CT":
        noise = rng.standard_normal(image.shape, dtype=np.float32)
        noise = ndi.gaussian_filter(noise, (0.0, 0.7, 0.7))
        noise *= rng.uniform(6.0, 20.0) / max(float(noise.std()), 1e-6)
        if low_dose is not None:
            noise = low_dose_noise(noise, image, grid, low_dose)
        return np.clip(image + noise, -1024.0, 3071.0)
    bias = np.exp(_bias_field(rng, grid, rng.uniform(0.1, 0.35)))
    gain = rng.uniform(300.0, 1500.0)
    signal = image * bias * gain
    sigma = rng.uniform(0.01, 0.04) * gain
    real = signal + rng.standard_normal(image.shape, dtype=np.float32) * sigma
    imaginary = rng.standard_normal(image.shape, dtype=np.float32) * sigma
    return np.sqrt(real * real + imaginary * imaginary)  # Rician magnitude


#: Effective attenuation (1/mm) that sets how much noisier rows with a longer lateral path
#: through the body are: tempered from water's 0.019/mm at about 70 keV, as tube-current
#: modulation and bowtie filters even out most of it; and the clip on the resulting factor.
_NOISE_ATTENUATION_PER_MM = 0.004
_NOISE_FACTOR_RANGE = (0.75, 1.5)


def low_dose_noise(fine: np.ndarray, image: np.ndarray, grid: Grid, dose: LowDose
                   ) -> np.ndarray:
    """Low-dose CT noise (HU) on the output grid, from the routine scan's ``fine`` correlated
    noise: a coarse grain (``dose.grain_mm``, the blotchy texture of iterative reconstruction)
    takes ``dose.coarse_share`` of the variance; the SD is ``dose.noise_sd_hu`` in rows of median
    lateral path through the body (``image`` above -500 HU) and grows with that path (photon
    starvation); horizontal streaks (white noise averaged over ``dose.streak_mm`` along the
    row), strongest in the widest rows, add up to ``dose.streak_hu``. An image-space
    approximation, not a projection simulation."""
    rng = np.random.default_rng(dose.seed)
    si, sj = grid.spacing[0], grid.spacing[1]
    path_mm = (image > -500.0).sum(axis=2, dtype=np.float32) * np.float32(si)  # (k, j)
    crossed = path_mm[path_mm > 0]
    reference = float(np.median(crossed)) if crossed.size else 0.0
    factor = np.clip(np.exp(0.5 * _NOISE_ATTENUATION_PER_MM * (path_mm - reference)),
                     *_NOISE_FACTOR_RANGE)
    noise = ndi.gaussian_filter(rng.standard_normal(image.shape, dtype=np.float32),
                                (0.0, dose.grain_mm / sj, dose.grain_mm / si))
    noise *= np.float32(np.sqrt(dose.coarse_share) / max(float(noise.std()), 1e-6))
    noise += fine * np.float32(np.sqrt(1.0 - dose.coarse_share) / max(float(fine.std()), 1e-6))
    noise *= (dose.noise_sd_hu * factor).astype(np.float32)[..., None]
    streaks = ndi.uniform_filter1d(rng.standard_normal(image.shape, dtype=np.float32),
                                   max(int(round(dose.streak_mm / si)), 1), axis=2)
    widest = max(float(path_mm.max()), 1e-6)
    streaks *= (dose.streak_hu / max(float(streaks.std()), 1e-6)
                * (path_mm / widest) ** 2).astype(np.float32)[..., None]
    noise += streaks
    return noise


def _bias_field(rng: np.random.Generator, grid: Grid, sd: float) -> np.ndarray:
    """Smooth log-bias field (SD ``sd``) varying over ~ the whole field of view."""
    coarse = rng.standard_normal((4, 4, 4)).astype(np.float32) * sd
    return upsample(coarse, grid.shape)


def _synthseg_corruption(image: np.ndarray, grid: Grid, rng: np.random.Generator) -> np.ndarray:
    """Bias field, noise and gamma on a SynthSeg-style image, rescaled to [0, 1]."""
    image = image * np.exp(_bias_field(rng, grid, rng.uniform(0.0, 0.4)))
    image += rng.standard_normal(image.shape, dtype=np.float32) * rng.uniform(0.0, 0.05)
    low, high = np.percentile(image, [0.5, 99.5])
    image = np.clip((image - low) / max(high - low, 1e-6), 0.0, 1.0)
    return image ** np.float32(np.exp(rng.normal(0.0, 0.3)))


def decimate(volume: np.ndarray, n: int) -> np.ndarray:
    """The centre sub-slice of each slice (labels are not averaged)."""
    return np.ascontiguousarray(volume[n // 2::n]) if n > 1 else volume


def pad_outside_reconstruction_circle(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Set voxels outside the inscribed reconstruction circle to a scanner padding value (HU)."""
    _, rows, cols = image.shape
    jj, ii = np.ogrid[:rows, :cols]
    radius2 = ((jj - (rows - 1) / 2) / (rows / 2)) ** 2 + ((ii - (cols - 1) / 2) / (cols / 2)) ** 2
    outside = radius2 > 1.0
    image = image.copy()
    image[:, outside] = float(rng.choice([-1024.0, -2048.0, -3024.0]))
    return image
