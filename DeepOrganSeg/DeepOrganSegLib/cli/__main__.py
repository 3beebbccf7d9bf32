"""``python -m DeepOrganSegLib.cli``: what the Slicer module (:mod:`DeepOrganSegLib.mrml.runner`)
launches."""

import sys

from .app import main

sys.exit(main())
