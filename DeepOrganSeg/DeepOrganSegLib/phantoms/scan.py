"""The scan's protocol beyond a named phase: when after the injection it was taken, at which
tube voltage, and at which dose.

A named contrast phase (``make_phantom(..., contrast_phase=...)``) is the reference protocol its
published HU were measured at: 120 kV at the phase's time. A case whose phase is left to chance
draws instead, on its own random stream (docs/phantoms.md, "The scan"):

* **contrast timing**: no contrast in :data:`NON_CONTRAST` of the cases, else a time after the
  start of injection, log-uniform over :data:`CONTRAST_TIME_S` (early arterial to delayed); each
  tissue's enhancement follows its time-attenuation curve
  (:func:`.appearance.timed_ct_means`), scaled by the patient (body weight, cardiac output and
  dose: 0.8-1.2) and per tissue (0.85-1.15);
* **tube voltage** (:data:`KV_SHARES`): iodine is brighter at low kV (x1.55-1.75 at 80 kV,
  x1.25-1.4 at 100 kV, x0.85-0.92 at 140 kV, relative to 120 kV), calcium less so, fat a few HU
  darker; water-like soft tissue hardly changes.

Every CT case with these details, named phase or not, draws the dose: in :data:`LOW_DOSE` of the
cases low-dose noise (:class:`LowDose`): coarser, correlated, stronger where the lateral path
through the body is long, with horizontal photon-starvation streaks
(:func:`.acquisition.low_dose_noise`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Scan", "LowDose", "REFERENCE_SCAN", "draw_scan", "NON_CONTRAST", "CONTRAST_TIME_S",
           "KV_SHARES", "LOW_DOSE", "phase_of"]

NON_CONTRAST = 0.3
#: Seconds after the start of injection, log-uniform: early arterial (bolus tracking plus a few
#: seconds) to a delayed phase of 5 minutes (Bae, Radiology 2010).
CONTRAST_TIME_S = (18.0, 300.0)
#: Tube voltage (kV) -> share of cases. Low kV is common for contrast-enhanced and slim patients.
KV_SHARES = {80: 0.15, 100: 0.35, 120: 0.4, 140: 0.1}
#: Tube voltage -> (iodine factor range, calcium factor range, fat shift range in HU), relative
#: to 120 kV (docs/phantoms.md, "Tube voltage").
_KV_EFFECTS = {80: ((1.55, 1.75), (1.3, 1.45), (-20.0, -10.0)),
               100: ((1.25, 1.4), (1.12, 1.22), (-10.0, -4.0)),
               120: ((1.0, 1.0), (1.0, 1.0), (0.0, 0.0)),
               140: ((0.85, 0.92), (0.92, 0.96), (2.0, 6.0))}
LOW_DOSE = 0.3


@dataclass(frozen=True)
class LowDose:
    """Low-dose noise (HU and mm): its SD in the body's centre rows, the Gaussian SD of its
    coarse (iterative-reconstruction) grain and that grain's share of the variance, and the
    horizontal photon-starvation streaks (amplitude at the widest rows, length along the row);
    ``seed`` draws their fields."""

    noise_sd_hu: float
    grain_mm: float
    coarse_share: float
    streak_hu: float
    streak_mm: float
    seed: int


@dataclass(frozen=True)
class Scan:
    """One case's protocol (defaults: the reference, 120 kV at a named phase's time, routine
    dose)."""

    #: True when the timing and the tube voltage were drawn (the phase was left to chance).
    timed: bool = False
    #: Seconds after the start of injection; None: no contrast (only when ``timed``).
    contrast_time_s: float | None = None
    #: The patient's factor on every tissue's enhancement, and one factor per tissue id.
    enhancement: float = 1.0
    tissue_enhancement: tuple[float, ...] = ()
    kv: int = 120
    iodine_scale: float = 1.0
    calcium_scale: float = 1.0
    fat_shift_hu: float = 0.0
    low_dose: LowDose | None = None


REFERENCE_SCAN = Scan()


def phase_of(time_s: float | None) -> str:
    """The protocol name of a time after injection (s): ``non-contrast`` (None), ``arterial``
    (< 45 s), ``portal-venous`` (45-120 s, the nephrographic phase included) or ``delayed``."""
    if time_s is None:
        return "non-contrast"
    return "arterial" if time_s < 45.0 else "portal-venous" if time_s < 120.0 else "delayed"


def draw_scan(rng: np.random.Generator, timed: bool, tissues: int) -> Scan:
    """One case's protocol: timing and tube voltage only if ``timed`` (else the reference's),
    the dose always; ``tissues`` per-tissue enhancement factors. Always the same number of
    draws."""
    u = rng.random(2)
    time_s = float(np.exp(rng.uniform(*np.log(CONTRAST_TIME_S))))
    enhancement = float(rng.uniform(0.8, 1.2))
    per_tissue = tuple(float(v) for v in rng.uniform(0.85, 1.15, tissues))
    kv = int(rng.choice(list(KV_SHARES), p=list(KV_SHARES.values())))
    iodine, calcium, fat = (float(rng.uniform(lo, hi)) for lo, hi in _KV_EFFECTS[kv])
    low_dose = LowDose(noise_sd_hu=float(rng.uniform(15.0, 35.0)),
                       grain_mm=float(rng.uniform(1.5, 3.5)),
                       coarse_share=float(rng.uniform(0.3, 0.7)),
                       streak_hu=float(rng.uniform(8.0, 25.0)),
                       streak_mm=float(rng.uniform(10.0, 40.0)),
                       seed=int(rng.integers(2 ** 63)))
    dose = low_dose if u[1] < LOW_DOSE else None
    if not timed:
        return Scan(low_dose=dose)
    return Scan(timed=True, contrast_time_s=None if u[0] < NON_CONTRAST else time_s,
                enhancement=enhancement, tissue_enhancement=per_tissue, kv=kv,
                iodine_scale=iodine, calcium_scale=calcium, fat_shift_hu=fat, low_dose=dose)
