"""The machine's facts a fit verdict depends on: free RAM, CUDA devices, bitsandbytes.

:func:`probe` reads them; tests build a :class:`Devices` by hand instead, so every verdict
and the 8/4-bit options can be checked on any machine.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass

from chatwidget.catalog import ModelSpec
from chatwidget.errors import PrecisionUnavailableError

#: Modules that are in ``sys.modules`` once a model has been loaded and generated with:
#: their presence means the once-per-process runtime is paid.
RUNTIME_MODULES = ("transformers.modeling_utils", "transformers.generation.utils", "tokenizers")


@dataclass(frozen=True)
class Gpu:
    """One CUDA device and its memory."""

    index: int
    name: str
    free_bytes: int
    total_bytes: int

    @property
    def device(self) -> str:
        return f"cuda:{self.index}"


@dataclass(frozen=True)
class Devices:
    """Free memory per device, and what the 8/4-bit options need.

    ``bitsandbytes`` says whether the package is importable; 8-bit and 4-bit need it and a
    CUDA device.
    """

    ram_free_bytes: int
    gpus: tuple[Gpu, ...] = ()
    bitsandbytes: bool = False

    @property
    def quantization_unavailable(self) -> str | None:
        """Why 8/4-bit cannot load here, or None when they can."""
        if not self.gpus and not self.bitsandbytes:
            return "8-bit and 4-bit need bitsandbytes and a CUDA GPU; neither is present."
        if not self.gpus:
            return "8-bit and 4-bit need a CUDA GPU; none is present."
        if not self.bitsandbytes:
            return (
                "8-bit and 4-bit need the bitsandbytes package, which is not installed "
                "(pip install bitsandbytes)."
            )
        return None

    def available_bytes(self) -> dict[str, int]:
        """Free bytes per device: ``{"cpu": ..., "cuda:0": ...}``."""
        free = {"cpu": self.ram_free_bytes}
        free.update({gpu.device: gpu.free_bytes for gpu in self.gpus})
        return free


def probe() -> Devices:
    """Read this machine's free RAM, its CUDA devices (through torch) and bitsandbytes."""
    import psutil

    ram = int(psutil.virtual_memory().available)
    return Devices(ram_free_bytes=ram, gpus=_cuda_devices(), bitsandbytes=_has_bitsandbytes())


def _cuda_devices() -> tuple[Gpu, ...]:
    import torch

    if not torch.cuda.is_available():
        return ()
    gpus = []
    for index in range(torch.cuda.device_count()):
        free, total = torch.cuda.mem_get_info(index)
        gpus.append(Gpu(index, torch.cuda.get_device_name(index), int(free), int(total)))
    return tuple(gpus)


def _has_bitsandbytes() -> bool:
    return importlib.util.find_spec("bitsandbytes") is not None


def runtime_loaded() -> bool:
    """Whether this process has the transformers runtime in memory already."""
    return all(name in sys.modules for name in RUNTIME_MODULES)


def require_quantization(spec: ModelSpec, devices: Devices | None = None) -> None:
    """Raise :class:`PrecisionUnavailableError` if ``spec``'s quantization cannot load here."""
    if spec.quantization is None:
        return
    why = (devices or Devices(0, _cuda_devices(), _has_bitsandbytes())).quantization_unavailable
    if why is not None:
        raise PrecisionUnavailableError(
            f"{spec.repo_id} cannot load in {spec.quantization}: {why} "
            "Pick a dtype instead (auto, bfloat16, float16 or float32)."
        )
