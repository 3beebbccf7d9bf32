"""The Slicer side of the engine: MRML nodes <-> engine objects and the runs the module polls.

``job``: one segmentation run (check, export, ``deeporganseg segment`` subprocess, import) and
the node conversions; ``refine``: stroke refinement of a kept run, with undo. The only engine
package that imports ``slicer`` and ``vtk`` (never Qt or ``slicer.app``): pytest runs it against
the PyPI ``slicer-core`` wheel. Nothing here imports PyTorch.
"""

from .job import (RunState, SegmentationRequest, OrganResult, SegmentationOutcome, KeptRun,
                  SegmentationJob, SegmentationFailed, run_segmentation,
                  volume_from_node, add_volume_node, set_volume_node_geometry,
                  ijk_to_ras_matrix, segments_from_labelmap, merge_segments,
                  find_segment_for_organ, hand_drawn_matches, place_next_to,
                  load_terminology_context, set_show_3d, in_scene, segment_tag, ORGAN_TAG, MODEL_TAG,
                  TASK_TAG)
from .refine import (SCRIBBLE_TAG, RefinementSession, RefineJob, segment_mask_on_grid)

__all__ = ["RunState", "SegmentationRequest", "OrganResult", "SegmentationOutcome", "KeptRun",
           "SegmentationJob", "SegmentationFailed", "run_segmentation",
           "volume_from_node", "add_volume_node", "set_volume_node_geometry",
           "ijk_to_ras_matrix", "segments_from_labelmap", "merge_segments",
           "find_segment_for_organ", "hand_drawn_matches", "place_next_to",
           "load_terminology_context", "set_show_3d", "in_scene", "segment_tag", "ORGAN_TAG", "MODEL_TAG",
           "TASK_TAG", "SCRIBBLE_TAG", "RefinementSession", "RefineJob",
           "segment_mask_on_grid"]
