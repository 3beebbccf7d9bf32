"""The compute devices every entry point accepts (command line, engine API, Slicer request).

Torch-free, so that the Slicer side can check a request without loading PyTorch;
``inference.resolve_device`` turns a name into a ``torch.device``."""

from __future__ import annotations

__all__ = ["DEVICES", "TRAINING_DEVICES"]

#: ``auto``: CUDA if available, else Apple MPS if available, else the CPU.
DEVICES = ("auto", "cuda", "cpu", "mps")
#: Where training runs: not Apple MPS, for which torch.distributed has no backend.
TRAINING_DEVICES = tuple(device for device in DEVICES if device != "mps")
