"""What the values of a phantom's maps mean: kinds, label tables, organ and tissue ids.

Three value spaces, one table each:

* *labels* (:data:`LABELS`): what a kind's label map holds, value -> name, stable across
  versions (trained models depend on them); :func:`merge_labels` derives coarser sets such as
  :data:`HVSMR_LABELS`.
* *organs* (:data:`ORGAN_ID`): every organ any kind labels, the values of the render-grid organ
  map; :func:`label_lut` turns them into a kind's label values.
* *tissues* (:data:`TISSUE_ID`): what sets a voxel's intensity (cortex vs medulla, gas vs gastric
  content), the values of the tissue map; air (0) is outside the body.
"""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np

from ..errors import InputError
from ..volume import Volume

KINDS = ("abdomen-ct", "heart-mr", "brain-mr", "body-ct")
PHASES = ("non-contrast", "arterial", "portal-venous")

_ABDOMEN_LABELS = {
    1: "liver", 2: "spleen", 3: "right_kidney", 4: "left_kidney", 5: "stomach", 6: "pancreas",
    7: "gallbladder", 8: "aorta", 9: "inferior_vena_cava",
}
LABELS: dict[str, dict[int, str]] = {
    "abdomen-ct": dict(_ABDOMEN_LABELS),
    "heart-mr": {
        1: "myocardium", 2: "left_ventricle", 3: "right_ventricle", 4: "left_atrium",
        5: "right_atrium", 6: "aorta", 7: "pulmonary_artery",
    },
    "brain-mr": {1: "csf", 2: "grey_matter", 3: "white_matter"},
    "body-ct": dict(_ABDOMEN_LABELS),
}
"""Label value -> name, per kind. Values are stable across versions."""

MODALITIES = {"abdomen-ct": "CT", "heart-mr": "MR", "brain-mr": "MR", "body-ct": "CT"}

HVSMR_LABELS = {1: "myocardium", 2: "blood_pool"}
"""The HVSMR 2016 two-label set (label values as in the challenge's ground truth)."""

_BLOOD_POOL = ("left_ventricle", "right_ventricle", "left_atrium", "right_atrium", "aorta",
               "pulmonary_artery")

TISSUES = (
    "air", "gas", "lung", "fat", "muscle", "bone_cortical", "bone_marrow", "liver", "liver_vessel",
    "liver_lesion", "spleen", "kidney_cortex", "kidney_medulla", "stomach_wall", "gastric_content",
    "bowel_wall", "bowel_content", "pancreas", "bile", "urine", "arterial_blood",
    "right_heart_blood", "caval_blood", "portal_blood", "myocardium", "disc", "csf", "cartilage",
    "thyroid", "brain", "soft_tissue", "grey_matter", "white_matter", "table", "ascites",
    "metal",
)
TISSUE_ID = {name: value for value, name in enumerate(TISSUES)}  # air = 0 (outside the body)

ORGANS = ("none",) + tuple(dict.fromkeys(
    name for table in LABELS.values() for name in table.values()))
ORGAN_ID = {name: value for value, name in enumerate(ORGANS)}


@functools.lru_cache(maxsize=None)
def label_lut(kind: str) -> np.ndarray:
    """Organ id -> the kind's label value (0 for organs the kind does not label)."""
    lut = np.zeros(256, dtype=np.uint8)
    for value, name in LABELS[kind].items():
        lut[ORGAN_ID[name]] = value
    return lut


def merge_labels(labels: Volume, label_names: dict[int, str],
                 groups: dict[str, Sequence[str]]) -> tuple[Volume, dict[int, str]]:
    """Derive a coarser label set: each new label (1, 2, ... in ``groups`` order) is a union.

    ``groups`` maps a new name to the old names it covers; old labels in no group become 0.
    """
    by_name = {name: value for value, name in label_names.items()}
    lut = np.zeros(max(256, int(labels.array.max()) + 1), dtype=np.uint8)
    names = {}
    for new_value, (new_name, old_names) in enumerate(groups.items(), start=1):
        unknown = [n for n in old_names if n not in by_name]
        if unknown:
            raise InputError(f"label {unknown[0]!r} is not in the label table "
                             f"({', '.join(label_names.values())})")
        lut[[by_name[n] for n in old_names]] = new_value
        names[new_value] = new_name
    return labels.with_array(lut[labels.array]), names


def hvsmr_labels(labels: Volume, label_names: dict[int, str] | None = None) -> Volume:
    """The HVSMR 2016 two-label map (1 myocardium, 2 blood pool) from a heart-mr label map."""
    merged, _ = merge_labels(labels, label_names or LABELS["heart-mr"],
                             {"myocardium": ["myocardium"], "blood_pool": list(_BLOOD_POOL)})
    return merged
