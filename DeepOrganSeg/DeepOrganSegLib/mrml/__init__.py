"""The Slicer side of the engine: what the Slicer module runs inside Slicer's own process.

* ``runner``: the ``deeporganseg`` child process (command lines, progress lines, cancel, the
  process tree, the CUDA probe) and what the jobs below share (``EngineJob``,
  ``EngineCommandJob``); no MRML.
* ``install``: which of the engine's Python packages are missing, and installing them.
* ``nodes``: MRML nodes <-> engine objects (volumes, labelmaps -> segments, terminology).
* ``job``: one segmentation run (check, export, engine subprocess, import) as a state machine.
* ``refine``: stroke refinement of a kept run, with undo; the stroke editor's parameter node.
* ``uncertainty``: a run's voxelwise uncertainty as a volume node, shown over the input with a
  colour bar.
* ``sample``: a phantom of a task made by the engine and loaded (sample data offline).
* ``warm``: the warm refinement engine (the engine's ``refine-session`` for one kept run).
* ``server``: the panel's "Server…" device (URL and token from Slicer's settings, never the
  scene; the engine command's ``--server`` flags).
* ``panel``: what the panel shows and asks for, without Qt (model list, organ choice, CRF
  fields, a run's options, which input the output selection belongs to).
* ``eta``: the time left of an engine run, from its stages.
* ``logic``: the module's Logic without Qt (``EngineLogic``: the jobs, one at a time, polled).

The only engine package that imports ``slicer`` and ``vtk`` (never Qt or ``slicer.app``), in
``nodes``, ``job`` and ``refine``; ``uncertainty``, ``sample`` and ``logic`` need MRML through them:
pytest runs them against the PyPI ``slicer-core`` wheel. ``runner``, ``install``, ``panel``,
``server``, ``warm`` and ``eta`` need no MRML. Nothing here imports PyTorch. Import the submodule you need (this package
imports none of them, so ``runner`` loads without MRML).
"""
