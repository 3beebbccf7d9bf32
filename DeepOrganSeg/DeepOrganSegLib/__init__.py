"""DeepOrganSeg engine: 3D DSN organ segmentation with a dense 3D CRF.

Pure Python + torch + SimpleITK; it never imports Qt or Slicer (only ``mrml.py`` touches MRML).
"""

import os

# OpenMP threads that spin while waiting slow torch 3-6x on a shared or busy machine (measured
# with the CRF on 2 cores); it only takes effect if set before torch is first imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
