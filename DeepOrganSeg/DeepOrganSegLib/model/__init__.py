"""The segmentation model: what its file describes and how it is read and written.

* ``spec``: tasks, labels, normalisation, inputs and the cascade stage (validated dataclasses);
* ``file``: the model file (safetensors weights + JSON metadata): ``read_metadata`` (no torch),
  ``load_model``, ``save_model``, ``replace_metadata``;
* ``container`` and ``schema``: the safetensors header and field checks every DeepOrganSeg file
  format shares (the body-part classifier's too);
* ``network``: the 3D deeply supervised network (imports torch; not re-exported here);
* ``terminology``: label names, colours and SNOMED CT codes, and their synonyms.

This package imports no torch: the Slicer module reads model files in Slicer's own process.
"""

from .file import LoadedModel, load_model, read_metadata, replace_metadata, save_model
from .spec import (FORMAT, FORMAT_VERSION, INPUT_CHANNELS, STAGE1_PREFIX, LabelSpec,
                   ModelMetadata, Normalization, StageSpec, TaskSpec, input_channel_count)

__all__ = ["LoadedModel", "load_model", "read_metadata", "replace_metadata", "save_model", "FORMAT",
           "FORMAT_VERSION", "INPUT_CHANNELS", "STAGE1_PREFIX", "LabelSpec", "ModelMetadata",
           "Normalization", "StageSpec", "TaskSpec", "input_channel_count"]
