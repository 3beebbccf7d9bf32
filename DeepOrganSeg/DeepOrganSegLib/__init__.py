"""DeepOrganSeg engine: 3D DSN organ segmentation with a dense 3D CRF.

Pure Python + torch + SimpleITK; it never imports Qt or Slicer (only the ``mrml``
package touches MRML).
Importing it changes nothing in the importing process (Slicer's own included): process settings
such as ``OMP_WAIT_POLICY`` belong to the engine's command line (``cli.main``).
"""

__version__ = "0.1.0"
