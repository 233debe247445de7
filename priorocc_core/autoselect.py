"""``backend: auto``: the fastest inference path this machine supports, and why.

    from priorocc_core.autoselect import probe, choose
    choice = choose(probe())        # Choice(backend, precision, device, reason)

:func:`choose` is a pure function of a :class:`Machine` (CPU flags, installed runtimes, CUDA),
so the rules are testable on fake flag sets; :func:`probe` reads the real machine. Rules, first
match wins (figures behind them: BENCHMARKS.md):

1. CUDA usable and allowed (device ``auto`` or ``cuda*``) -> ``torch`` ``fp16`` on ``cuda``.
2. OpenVINO installed and the CPU has native bf16 (``amx_bf16`` or ``avx512_bf16``) ->
   ``openvino`` ``bf16`` (on AMX: the 8x path of the speed issue; on avx512_bf16: 3.2x).
3. OpenVINO installed, no native bf16 -> ``openvino`` ``fp32``. OpenVINO's CPU plugin does not
   emulate bf16 there: ``INFERENCE_PRECISION_HINT=bf16`` compiles to f32 (checked on an
   avx2-only EPYC), so asking for bf16 would only be misleading.
4. No OpenVINO, native bf16 -> ``torch`` ``bf16`` (channels_last; 2.3x on avx512_bf16).
5. No OpenVINO, no native bf16, onnxruntime installed -> ``onnxruntime`` ``fp32`` (1.5x).
6. Otherwise ``torch`` ``fp32`` (channels_last).

int8 comes before rules 2-3, with OpenVINO and int8 dot-product hardware (``amx_int8``,
``avx512_vnni``, ``avx_vnni``) only, in two cases: asked for (``allow_int8``: ``precision
int8``), or a *validated* int8 IR of this checkpoint exists (``int8``: its
:class:`priorocc_core.int8_gate.Int8Status`, ok: made from this checkpoint's code and weights,
and agreeing with fp32 above the gate on a held validation world). Without int8 hardware
OpenVINO runs int8 through avx2's 16-bit pair sums, so a validated IR is then not taken; an IR
that is present but not usable is named in the reason of the choice made instead.
"""
from __future__ import annotations

import importlib.util
import os
import platform
from dataclasses import dataclass, field
from typing import Any

BF16_FLAGS = ("amx_bf16", "avx512_bf16")
INT8_FLAGS = ("amx_int8", "avx512_vnni", "avx_vnni")


@dataclass(frozen=True)
class Machine:
    cpu_flags: frozenset[str] = field(default_factory=frozenset)  # /proc/cpuinfo "flags"
    runtimes: frozenset[str] = field(default_factory=frozenset)  # of "openvino", "onnxruntime"
    cuda: bool = False  # torch.cuda.is_available()


@dataclass(frozen=True)
class Choice:
    backend: str  # torch, onnxruntime, openvino
    precision: str  # fp32, bf16, fp16, int8
    device: str  # cpu, cuda
    reason: str  # one line, for the log and /diagnostics

    def as_dict(self) -> dict[str, str]:
        return {"backend": self.backend, "precision": self.precision, "device": self.device,
                "backend_reason": self.reason}


def _first(flags: frozenset[str], names: tuple[str, ...]) -> str | None:
    return next((f for f in names if f in flags), None)


def choose(machine: Machine, device: str = "auto", allow_int8: bool = False, int8: Any = None) -> Choice:
    """Machine -> the backend, precision and device to run (see the module docstring).
    int8: None (no int8 IR for this checkpoint) or an ``Int8Status`` (``.ok``, ``.reason``)."""
    flags = frozenset(f.lower() for f in machine.cpu_flags)
    dev = str(device)
    if dev not in ("auto", "cpu") and not dev.startswith("cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}")
    if dev.startswith("cuda") and not machine.cuda:
        raise ValueError(f"device {device!r} asked for, but CUDA is not available (torch.cuda.is_available() is False)")
    if machine.cuda and dev != "cpu":
        return Choice("torch", "fp16", "cuda" if dev == "auto" else dev, "CUDA device available: torch fp16 on the GPU")
    bf16 = _first(flags, BF16_FLAGS)
    have_ov = "openvino" in machine.runtimes
    int8_hw = _first(flags, INT8_FLAGS)
    validated = int8 is not None and bool(getattr(int8, "ok", False))
    if allow_int8 and have_ov and int8_hw:
        return Choice("openvino", "int8", "cpu",
                      f"int8 asked for and the CPU has {int8_hw}: OpenVINO int8 (NNCF-quantised)")
    if validated and have_ov and int8_hw:
        return Choice("openvino", "int8", "cpu", f"the CPU has {int8_hw} (int8 dot products) and a {int8.reason}: "
                      "OpenVINO int8")
    # why int8 was not taken, when there is an IR to speak of
    why_not = "" if int8 is None or not have_ov else (
        f"; int8 IR not used: no int8 dot-product hardware (no {'/'.join(INT8_FLAGS)})" if validated
        else f"; int8 IR not used: {int8.reason}")
    if have_ov and bf16:
        return Choice("openvino", "bf16", "cpu", f"CPU has {bf16} (native bf16): OpenVINO bf16" + why_not)
    if have_ov:
        return Choice("openvino", "fp32", "cpu",
                      "no native bf16 on this CPU (no amx_bf16/avx512_bf16; OpenVINO would run bf16 as f32): "
                      "OpenVINO fp32" + why_not)
    if bf16:
        return Choice("torch", "bf16", "cpu", f"OpenVINO not installed; CPU has {bf16}: torch bf16 channels_last")
    if "onnxruntime" in machine.runtimes:
        return Choice("onnxruntime", "fp32", "cpu", "OpenVINO not installed, no native bf16: onnxruntime fp32")
    return Choice("torch", "fp32", "cpu", "neither OpenVINO nor onnxruntime installed, no native bf16: torch fp32")


def cpu_flags(path: str = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU's feature flags (Linux); empty when unreadable (then no flag-based path is taken)."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_name(path: str = "/proc/cpuinfo") -> str:
    """The CPU's model name (Linux), else platform.processor()."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


SPEED_FLAGS = ("avx2", "fma", "avx512f") + BF16_FLAGS + INT8_FLAGS


def cpu_summary(path: str = "/proc/cpuinfo") -> str:
    """One line naming the CPU, its core count and the flags speed figures depend on (present and
    absent), for reports: '<model>, 2 cores, avx2 fma; no avx512f amx_bf16 ...'."""
    flags = cpu_flags(path)
    have = [f for f in SPEED_FLAGS if f in flags]
    lack = [f for f in SPEED_FLAGS if f not in flags]
    return (f"{cpu_name(path)}, {os.cpu_count()} cores, " + (" ".join(have) or "none of " + " ".join(SPEED_FLAGS))
            + ("; no " + " ".join(lack) if have and lack else ""))


def installed_runtimes() -> frozenset[str]:
    return frozenset(n for n in ("openvino", "onnxruntime") if importlib.util.find_spec(n) is not None)


def probe() -> Machine:
    import torch

    return Machine(cpu_flags(), installed_runtimes(), bool(torch.cuda.is_available()))


def precision_for(backend: str, machine: Machine, device: str) -> str:
    """``precision: auto`` with a named backend: its fastest lossless-enough precision here."""
    if str(device).startswith("cuda"):
        return "fp16" if backend == "torch" else "fp32"
    if backend in ("torch", "openvino") and _first(frozenset(machine.cpu_flags), BF16_FLAGS):
        return "bf16"
    return "fp32"


def resolve(backend: str, precision: str, device: str, machine: Machine | None = None, int8: Any = None) -> Choice:
    """Any of backend / precision / device may be ``auto``; -> the concrete Choice (with why).
    int8: the checkpoint's int8 IR status, if it has one (:func:`choose`)."""
    m = machine if machine is not None else probe()
    if backend == "auto":
        c = choose(m, device, allow_int8=(precision == "int8"), int8=int8 if precision in ("auto", "int8") else None)
        if precision not in ("auto", c.precision):
            raise ValueError(f"backend 'auto' picks the precision too (here {c.precision}: {c.reason}); "
                             f"set precision 'auto' or name a backend for precision {precision!r}")
        return c
    dev = device
    if device == "auto":
        dev = "cuda" if (m.cuda and backend == "torch") else "cpu"
    prec = precision_for(backend, m, dev) if precision == "auto" else precision
    why = "named" if precision != "auto" else "auto for this backend and CPU"
    return Choice(backend, prec, dev, f"backend {backend} named; precision {prec} ({why}); device {dev}")
