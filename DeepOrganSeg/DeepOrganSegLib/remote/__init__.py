"""Running ``segment`` and ``refine`` on a ``deeporganseg serve`` machine: the wire protocol
(``protocol``) and the client (``client``), both on the standard library alone and free of
torch, so that the Slicer module can load them into Slicer's own process (Python 3.9).

The server itself is :mod:`DeepOrganSegLib.server`; this package never imports it.
"""
