"""DeepOrganSeg engine: 3D DSN organ segmentation with a dense 3D CRF.

Pure Python + torch + SimpleITK; it never imports Qt or Slicer (only ``mrml.py`` touches MRML).
"""

__version__ = "0.1.0"
