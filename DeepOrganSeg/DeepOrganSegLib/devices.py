"""The compute devices every entry point accepts (command line, engine API, Slicer request).

Torch-free, so that the Slicer side can check a request without loading PyTorch;
``inference.resolve_device`` turns a name into a ``torch.device``."""

from __future__ import annotations

from .errors import InputError

__all__ = ["DEVICES", "TRAINING_DEVICES", "check_device_name"]

#: ``auto``: CUDA if available, else Apple MPS if available, else the CPU.
DEVICES = ("auto", "cuda", "cpu", "mps")
#: Where training runs: not Apple MPS, for which torch.distributed has no backend.
TRAINING_DEVICES = tuple(device for device in DEVICES if device != "mps")


def check_device_name(name: str) -> str:
    """``name`` if it is one of :data:`DEVICES`; else an :class:`InputError` naming them. The
    one check of a device name, wherever a request comes from (whether the device is present
    is :func:`.inference.resolve_device`'s to say, where torch is loaded)."""
    if name not in DEVICES:
        raise InputError(f"device {name!r} is not one of {', '.join(DEVICES)}")
    return name
