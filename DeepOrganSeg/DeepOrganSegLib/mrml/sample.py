"""Sample data offline: a synthetic phantom of a task, made by the engine in its own process
(``deeporganseg phantom``) and loaded as a volume node, so that a new user can try the module
with no data and no internet.

:class:`SampleJob` is polled like a segmentation (:class:`.runner.EngineCommandJob`): the
phantom is generated and written in the child (a second or two; the generator needs SciPy, one of
the engine's packages), then read and added to the scene as one volume node named after the
task. The scene is only touched by that last step; the temporary folder is removed in every case.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from ..volume_io import read_volume
from .nodes import add_volume_node
from .runner import EngineCommandJob, phantom_command

__all__ = ["SAMPLE_TAG", "SampleJob"]

#: Node attribute of a sample volume: the phantom kind and seed it was made from.
SAMPLE_TAG = "DeepOrganSeg.Sample"


class SampleJob(EngineCommandJob):
    """One click on *Load sample*: a phantom of ``task`` (seed ``seed``) into ``scene``."""

    def __init__(self, scene: Any, task: str, python: str, *, seed: int = 0,
                 environment: dict[str, str] | None = None,
                 temporary_root: str | Path | None = None) -> None:
        super().__init__(python, environment=environment)
        self.scene, self.task, self.seed = scene, task, seed
        self.temporary_root = temporary_root
        #: The volume node added, once DONE.
        self.volume_node: Any = None

    def _command(self) -> list[str]:
        self.temporary_folder = Path(tempfile.mkdtemp(prefix="DeepOrganSeg-sample-",
                                                      dir=self.temporary_root))
        return phantom_command(self.task, self._temporary_path("image.nrrd"),
                               self._temporary_path("labels.nrrd"), seed=self.seed,
                               python=self.python)

    def _apply(self) -> None:
        image = read_volume(self._temporary_path("image.nrrd"))
        name = self.scene.GenerateUniqueName(f"Sample {self.task}")
        self.volume_node = add_volume_node(self.scene, image, name)
        self.volume_node.SetAttribute(SAMPLE_TAG, f"{self.task} seed {self.seed}")

    def _done_message(self) -> str:
        return f"sample {self.task} loaded in {self.elapsed_s:.1f} s"
