"""Body-part recognition on axial slices: which body regions a volume shows, and in which modality.

After Roth et al. 2015 (arXiv 1504.04003): a small 2D ConvNet classifies every axial slice into
one of :data:`REGIONS` (head, neck, chest, abdomen, pelvis, legs); a second, tiny head tells CT
from MR from the volume's intensity statistics (:func:`intensity_features`). The per-slice
probabilities become a *region profile* along the patient's superior-inferior axis: the
labelling that is contiguous and ordered (head above neck above chest ...), found exactly by
dynamic programming (Viterbi). Task **Auto** uses the profile to pick the task
(:func:`choose_auto_task`) and, for abdominal CT, the slab of input slices worth segmenting
(:func:`abdomen_slab`).

Input of the network, whatever the input's direction matrix: the volume resampled onto the
canonical axis-aligned LPS grid (:func:`DeepOrganSegLib.grid.working_grid`) at
:attr:`SliceGeometry.pixel_mm` in-plane and :attr:`SliceGeometry.slice_mm` between slices,
centred on the body, padded/cropped to ``size`` x ``size`` pixels, 2.5D (each slice with its
neighbours as channels). Intensities are normalised the same way for CT and MR: the
``percentiles`` of the voxels above the image minimum (padding, MR background) map to [0, 1].
This keeps one network for both modalities. The modality head, by contrast, sees the absolute
intensities: CT is calibrated (air at -1000 HU) and MR is not, which transfers to real scans,
whereas an appearance-based modality head trained on phantoms took the real head CT of
``invesalius-examples`` for MR (p = 0.975).

Modules: ``slices`` (what the network sees), ``classifier`` (the network and its model file),
``profile`` (region profile and task Auto); ``deeporganseg regions`` is
:mod:`DeepOrganSegLib.cli.regions`. This package itself is torch-free: the phantom generator
takes :data:`REGIONS` from here.

The classifier lives in its own small model file beside the segmentation model
(:data:`CLASSIFIER_FILE`, safetensors + JSON metadata, format ``deeporganseg-bodypart``). Its
suffix is not ``.safetensors`` on purpose: model lists glob ``*.safetensors`` for segmentation
models.
"""

__all__ = ["REGIONS", "MODALITIES"]

#: The body regions of the slice classifier, superior to inferior.
REGIONS = ("head", "neck", "chest", "abdomen", "pelvis", "legs")
MODALITIES = ("CT", "MR")
