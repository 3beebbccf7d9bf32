"""The one place that finds the files DeepOrganSeg ships: bundled model files and the body-part
classifier (``Resources/Models``), and the folder where users drop model files of their own.

They live in ``Resources/Models`` of the repository root in a source checkout (and a module
added to Slicer through "Additional module paths"), of the module folder in an extension build
(installed with the module's resources), or under ``<prefix>/share/deeporganseg/Models``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .errors import InputError

__all__ = ["model_folders", "bundled_models", "default_model_path", "bundled_file",
           "user_model_folder", "user_models", "USER_MODELS_VARIABLE"]

#: Environment variable that names the user's model folder (overrides the default).
USER_MODELS_VARIABLE = "DEEPORGANSEG_MODELS"

_ENGINE = Path(__file__).resolve().parent


def model_folders() -> list[Path]:
    """The folders that may hold bundled files, in the order they are searched."""
    candidates = (_ENGINE.parent.parent / "Resources" / "Models",
                  _ENGINE.parent / "Resources" / "Models",
                  Path(sys.prefix) / "share" / "deeporganseg" / "Models")
    return [folder for folder in candidates if folder.is_dir()]


def bundled_models() -> list[Path]:
    """The bundled segmentation model files (``*.safetensors``), sorted by name."""
    found = {path.resolve() for folder in model_folders() for path in folder.glob("*.safetensors")}
    return sorted(found, key=lambda path: path.name)


def default_model_path() -> Path:
    """The model used when none is given: the newest bundled one (the last by name, so that
    ``...-v2`` wins over ``...-v1``)."""
    models = bundled_models()
    if not models:
        raise InputError("no bundled model found; give --model FILE")
    return models[-1]


def bundled_file(name: str) -> Path | None:
    """The first bundled file called ``name`` (e.g. the body-part classifier), or None."""
    for folder in model_folders():
        if (folder / name).is_file():
            return folder / name
    return None


def user_model_folder() -> Path:
    """The folder whose ``*.safetensors`` files the Slicer module lists beside the bundled models
    (e.g. the ``model.safetensors`` of ``training/train.py --data``): ``$DEEPORGANSEG_MODELS``,
    else ``$XDG_DATA_HOME/deeporganseg/models`` (``~/.local/share/deeporganseg/models``). It may
    not exist."""
    if os.environ.get(USER_MODELS_VARIABLE):
        return Path(os.environ[USER_MODELS_VARIABLE]).expanduser()
    data_home = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data_home) / "deeporganseg" / "models"


def user_models() -> list[Path]:
    """The model files in :func:`user_model_folder`, sorted by name ([] without the folder)."""
    folder = user_model_folder()
    if not folder.is_dir():
        return []
    return sorted(folder.glob("*.safetensors"), key=lambda path: path.name)
