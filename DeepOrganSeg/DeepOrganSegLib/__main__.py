"""``python -m DeepOrganSegLib`` runs the ``deeporganseg`` command line."""

import sys

from .cli import main

sys.exit(main())
