"""Synthetic anatomical phantoms: label maps from a parametric anatomy, images synthesised on them.

No labelled data set can be downloaded where DeepOrganSeg is developed, so the engine brings its
own.
Four kinds are generated (:data:`KINDS`):

``abdomen-ct``
    Abdominal CT from above the liver dome to the pelvis, in Hounsfield units, in one of three
    named contrast phases (non-contrast, arterial, portal-venous) or, left to chance, at any
    time from early arterial to delayed and any tube voltage from 80 to 140 kV.
``heart-mr``
    Whole-heart balanced-SSFP MR around the heart (bright blood, as in HVSMR 2016).
``brain-mr``
    T1-weighted brain MR made by deforming the ICBM152 2009 grey/white-matter maps bundled in the
    PyPI package ``nilearn``.
``body-ct``
    Whole-body CT from the neck (optionally the head) to the thighs, with a body-region label for
    every axial slice (:data:`..bodypart.REGIONS`), for the body-part classifier.

How a case is made
------------------
1. *Anatomy.* One parametric human body (:class:`~.body.Body`) in patient LPS millimetres serves
   abdomen-ct, body-ct and heart-mr: each organ is an analytic primitive (ellipsoid, capsule
   chain along a spline, superellipse cross-section) with random size, shape and position,
   painted in anatomical order so that organs touch (the kidney carves the liver, the psoas
   carves the kidney). A smooth random displacement field deforms every primitive, and a
   breathing shift moves the diaphragm and the upper-abdominal organs together.
2. *Maps.* Painting yields a *tissue* map (what sets the intensity: cortex vs medulla, gas vs
   gastric content) and an *organ* map (what the networks learn); the label map is the organ map
   restricted to the kind's label table.
3. *Image.* Each tissue gets a random mean intensity from published ranges for the modality and
   phase, plus a correlated texture; the image is rendered on a grid that is three times finer
   through-plane when slices are thick, blurred by the slice profile and the in-plane point-spread
   function, downsampled (partial volume), then given scanner noise (and an MR bias field).
4. *Geometry.* Optionally the array is re-oriented (flipped/permuted/oblique direction matrix) with
   the anatomy unchanged in patient coordinates.

Everything is deterministic from ``seed``: the anatomy, the intensities and the noise come from
independent streams, so changing the contrast phase changes the image but not the labels.

Modules
-------
The public API is this package's ``__all__``; the modules behind it import one way, from the
recipe down to the building blocks:

* ``generator`` (:func:`make_phantom`, :class:`Phantom`; ``deeporganseg phantom`` is
  :mod:`DeepOrganSegLib.cli.phantom`);
* the kinds: ``torso`` (abdomen-ct, body-ct, heart-mr: field of view and painting order) and
  ``brain`` (brain-mr, from the ICBM152 atlas);
* the torso's organ painters, one per system: ``wall`` (skin, muscle, cavities, lungs, arms,
  table), ``abdomen``, ``vessels``, ``retroperitoneum`` (crura, lymph nodes, a slim patient's
  fat planes), ``heart``, ``thorax``, ``head_neck``, ``skeleton``, sharing a
  ``painter.TorsoPainter``;
* what a case draws beyond the textbook body: ``variants`` (variants and findings) and
  ``patient`` (the detail patients show around the great vessels, pancreas and stomach);
* the anatomy's building blocks: ``body`` (the parametric adult), ``canvas`` (the maps being
  painted), ``shapes`` (primitives in mm), ``fields`` (smooth random fields), ``geometry``
  (grids and frames);
* image formation: ``appearance`` (intensities per tissue), ``scan`` (the CT protocol: contrast
  timing, tube voltage, dose), ``acquisition`` (grid choice, slice profile, blur, noise),
  ``orientation`` (direction matrices);
* ``labels``: kinds, label tables, organ and tissue ids, label merging.
"""

from .generator import Phantom, make_phantom
from .labels import HVSMR_LABELS, KINDS, LABELS, MODALITIES, PHASES, hvsmr_labels, merge_labels

__all__ = [
    "KINDS", "PHASES", "LABELS", "MODALITIES", "HVSMR_LABELS", "Phantom",
    "make_phantom", "merge_labels", "hvsmr_labels",
]
