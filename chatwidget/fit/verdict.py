"""One verdict per precision option: fits on GPU, partial offload, CPU only, or won't fit.

:func:`judge` places an estimate on a machine's devices the way ``device_map="auto"`` does
(GPUs in order, the rest in RAM), keeping a headroom on each device, and checks it against
the memory budget. The result, a :class:`FitTable`, is plain data with ``as_dict()`` for rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from chatwidget.fit.devices import Devices
from chatwidget.fit.estimator import MiB, ModelEstimate, OptionEstimate
from chatwidget.format import format_bytes

#: Plan to use at most this share of a device's free memory (the rest is the system's).
HEADROOM_FRACTION = 0.9
#: Device memory torch's CUDA context and cuBLAS workspace take on each GPU a model uses.
#: A typical figure, not measured on this machine (it has no GPU).
CUDA_CONTEXT_BYTES = 500 * MiB


class Verdict(StrEnum):
    """Where an option can run."""

    GPU = "gpu"
    PARTIAL = "partial"
    CPU = "cpu"
    NONE = "none"

    @property
    def label(self) -> str:
        return _LABELS[self]


_LABELS = {
    Verdict.GPU: "Fits on GPU",
    Verdict.PARTIAL: "Partial offload",
    Verdict.CPU: "CPU only",
    Verdict.NONE: "Won't fit",
}


@dataclass(frozen=True)
class OptionFit:
    """One option's verdict, with the numbers behind it.

    ``required_bytes`` is what loading it now takes (the runtime included when this process
    has not paid it); ``placement`` is the bytes planned per device; ``available_bytes`` is
    each device's free memory as measured; ``budget_bytes`` is the budget it was held to.
    """

    option: str
    verdict: Verdict
    required_bytes: int
    placement: Mapping[str, int]
    available_bytes: Mapping[str, int]
    budget_bytes: int | None
    note: str
    estimate: OptionEstimate

    @property
    def label(self) -> str:
        return self.verdict.label

    @property
    def fits(self) -> bool:
        return self.verdict is not Verdict.NONE

    def as_dict(self) -> dict[str, object]:
        """JSON-ready row: option, verdict and label, bytes, the note, and the parts."""
        return {
            "option": self.option,
            "verdict": self.verdict.value,
            "label": self.label,
            "required_bytes": self.required_bytes,
            "placement": dict(self.placement),
            "available_bytes": dict(self.available_bytes),
            "budget_bytes": self.budget_bytes,
            "note": self.note,
            "estimate": self.estimate.as_dict(),
        }


@dataclass(frozen=True)
class AbsentOption:
    """An option this machine or checkpoint cannot offer, and why."""

    option: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"option": self.option, "reason": self.reason}


@dataclass(frozen=True)
class FitTable:
    """A model's verdicts: one row per option that applies, and the absent ones with why."""

    repo_id: str
    context_tokens: int
    source: str
    rows: tuple[OptionFit, ...]
    absent: tuple[AbsentOption, ...] = ()
    notes: tuple[str, ...] = field(default=())

    def row(self, option: str) -> OptionFit:
        """The row of ``option``; KeyError (saying why) when it is absent."""
        for row in self.rows:
            if row.option == option:
                return row
        for gone in self.absent:
            if gone.option == option:
                raise KeyError(f"{option} is not available for {self.repo_id}: {gone.reason}")
        raise KeyError(f"{self.repo_id} has no option {option!r}")

    def as_dict(self) -> dict[str, object]:
        return {
            "repo_id": self.repo_id,
            "context_tokens": self.context_tokens,
            "source": self.source,
            "rows": [r.as_dict() for r in self.rows],
            "absent": [a.as_dict() for a in self.absent],
            "notes": list(self.notes),
        }


def judge(
    estimate: ModelEstimate,
    devices: Devices,
    *,
    budget_bytes: int | None = None,
    runtime_loaded: bool = False,
) -> FitTable:
    """Verdicts for every option of ``estimate`` on ``devices`` within ``budget_bytes``.

    8/4-bit rows appear only where bitsandbytes and a CUDA device are present; elsewhere they
    are listed in ``absent`` with the reason. ``runtime_loaded`` says whether this process
    has the transformers runtime already (see :func:`chatwidget.fit.devices.runtime_loaded`).
    """
    rows: list[OptionFit] = []
    absent = [AbsentOption(name, why) for name, why in estimate.unsupported.items()]
    missing = devices.quantization_unavailable
    for option in estimate.options:
        if option.quantization is not None and missing is not None:
            absent.append(AbsentOption(option.option, missing))
            continue
        rows.append(
            judge_option(option, devices, budget_bytes=budget_bytes, runtime_loaded=runtime_loaded)
        )
    return FitTable(
        repo_id=estimate.repo_id,
        context_tokens=estimate.context_tokens,
        source=estimate.source,
        rows=tuple(rows),
        absent=tuple(absent),
        notes=estimate.notes,
    )


def judge_option(
    option: OptionEstimate,
    devices: Devices,
    *,
    budget_bytes: int | None = None,
    runtime_loaded: bool = False,
) -> OptionFit:
    """The verdict of one option (see :func:`judge`)."""
    required = option.required_bytes(runtime_loaded=runtime_loaded)
    host = required - option.device_bytes  # tokenizer, overhead and runtime stay in RAM
    ram = int(devices.ram_free_bytes * HEADROOM_FRACTION)
    placement: dict[str, int] = {}
    remaining = option.device_bytes
    for gpu in devices.gpus:
        room = int(gpu.free_bytes * HEADROOM_FRACTION) - CUDA_CONTEXT_BYTES
        if remaining <= 0 or room <= 0:
            continue
        taken = min(room, remaining)
        placement[gpu.device] = taken + CUDA_CONTEXT_BYTES
        remaining -= taken
    on_gpu = bool(placement)
    placement["cpu"] = host + remaining
    if on_gpu:
        required = sum(placement.values())

    def fit(verdict: Verdict, note: str) -> OptionFit:
        return OptionFit(
            option=option.option,
            verdict=verdict,
            required_bytes=required,
            placement=placement,
            available_bytes=devices.available_bytes(),
            budget_bytes=budget_bytes,
            note=note,
            estimate=option,
        )

    need = format_bytes(required)
    if budget_bytes is not None and option.model_bytes > budget_bytes:
        return fit(
            Verdict.NONE,
            f"needs {format_bytes(option.model_bytes)}, more than the memory budget of "
            f"{format_bytes(budget_bytes)}.",
        )
    if on_gpu and remaining <= 0 and placement["cpu"] <= ram:
        gpus = ", ".join(d for d in placement if d != "cpu")
        return fit(Verdict.GPU, f"needs {need}: all weights and the KV cache on {gpus}.")
    if option.quantization is not None and remaining > 0:
        return fit(
            Verdict.NONE,
            f"needs {format_bytes(option.device_bytes)} of GPU memory; bitsandbytes layers "
            "must all be on the GPU.",
        )
    if placement["cpu"] > ram:
        where = "RAM beside what the GPU holds" if on_gpu else "RAM"
        return fit(
            Verdict.NONE,
            f"needs {format_bytes(placement['cpu'])} of {where}, but only {format_bytes(ram)} "
            "of it can be used.",
        )
    if on_gpu:
        offloaded = format_bytes(remaining)
        return fit(
            Verdict.PARTIAL,
            f"needs {need}: {offloaded} of it runs from RAM, which is slower than the GPU.",
        )
    return fit(Verdict.CPU, f"needs {need} of RAM; {format_bytes(ram)} can be used.")
