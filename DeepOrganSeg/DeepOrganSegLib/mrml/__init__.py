"""The Slicer side of the engine: what the Slicer module runs inside Slicer's own process.

* ``runner``: the ``deeporganseg`` child process (command lines, progress lines, cancel, the
  process tree, the CUDA probe) and what the jobs below share (``EngineJob``,
  ``EngineCommandJob``); no MRML.
* ``install``: which of the engine's Python packages are missing, and installing them.
* ``nodes``: MRML nodes <-> engine objects (volumes, labelmaps -> segments, terminology).
* ``job``: one segmentation run (check, export, engine subprocess, import) as a state machine.
* ``refine``: stroke refinement of a kept run, with undo.

The only engine package that imports ``slicer`` and ``vtk`` (never Qt or ``slicer.app``), in
``nodes``, ``job`` and ``refine``: pytest runs them against the PyPI ``slicer-core`` wheel.
``runner`` and ``install`` need no MRML. Nothing here imports PyTorch. Import the submodule
you need (this package imports none of them, so ``runner`` loads without MRML).
"""
