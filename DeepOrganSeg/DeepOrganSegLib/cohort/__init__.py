"""A cohort: many scans segmented as one batch (``deeporganseg batch``), resumable, split into
parts that any scheduler can run, and summed up in a report.

Modules, from the inputs to the report:

* ``cases``: the cases of a batch from files, DICOM series folders, folders of either and
  ``.csv``/``.txt`` lists; their ids (clashes resolved and reported); the part of them that one
  job runs (``--parts N --part I``, or the scheduler's array index);
* ``folder``: the output folder (``DIR/<case>.<format>``, ``DIR/<case>.json``, a QC picture per
  case, failure records), which cases in it are complete, and the settings they were made with;
* ``memory``: what the machine (or its container) lets a batch use, and what one case takes;
* ``work``: one case, start to end: read, segment, picture, write, or a one-line reason;
* ``pool``: the cases of a run in this process or in K worker processes, each loading the model
  once, within the memory budget, with progress and cancel;
* ``thumbnail``: the QC picture of a case, organs outlined;
* ``report``: ``DIR/cohort.csv`` and ``DIR/report.html`` over every case in the folder.

The command line over them is :mod:`DeepOrganSegLib.cli.batch`. Importing this package loads
nothing heavy; ``work`` and ``pool`` load torch when a case runs.
"""
