"""``backend: auto`` (issue: speed at the machine's limit): the choice on fake CPU flag sets,
the fallback when a runtime is missing, and the choice visible in the node's log and /diagnostics.

Mutations tried: the native-bf16 rule disabled in ``choose`` (amx / avx512_bf16 cases fail);
OpenVINO taken as always installed (the three no-OpenVINO cases and the int8 case fail);
``pred.choice`` not set in make_predictor (the diagnostics test fails); ``resolve`` ignoring an
explicit precision with backend auto (the conflict test fails).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from priorocc_core import autoselect
from priorocc_core.autoselect import Machine, choose, resolve
from priorocc_core.int8_gate import Int8Status

AVX2 = frozenset("fpu sse sse2 avx fma avx2 bmi2".split())  # this dev box (AMD EPYC): no avx512, no AMX
AVX512_BF16 = AVX2 | {"avx512f", "avx512bw", "avx512_vnni", "avx512_bf16"}
AMX = AVX512_BF16 | {"amx_tile", "amx_bf16", "amx_int8"}
ALL = frozenset({"openvino", "onnxruntime"})


@pytest.mark.parametrize("flags,runtimes,cuda,expected,words", [
    (AMX, ALL, False, ("openvino", "bf16", "cpu"), "amx_bf16"),
    (AVX512_BF16, ALL, False, ("openvino", "bf16", "cpu"), "avx512_bf16"),
    (AVX2, ALL, False, ("openvino", "fp32", "cpu"), "no native bf16"),
    (AMX, ALL, True, ("torch", "fp16", "cuda"), "CUDA"),
    (AMX, frozenset({"onnxruntime"}), False, ("torch", "bf16", "cpu"), "OpenVINO not installed"),
    (AVX2, frozenset({"onnxruntime"}), False, ("onnxruntime", "fp32", "cpu"), "OpenVINO not installed"),
    (AVX2, frozenset(), False, ("torch", "fp32", "cpu"), "neither"),
    (frozenset(), ALL, False, ("openvino", "fp32", "cpu"), "no native bf16"),  # flags unreadable
], ids=["amx", "avx512_bf16", "avx2", "cuda", "no-openvino-bf16", "no-openvino-avx2", "nothing", "no-flags"])
def test_choice_on_fake_machines(flags, runtimes, cuda, expected, words):
    c = choose(Machine(flags, runtimes, cuda))
    assert (c.backend, c.precision, c.device) == expected
    assert words in c.reason


def test_int8_only_when_allowed_and_with_int8_hardware():
    assert choose(Machine(AMX, ALL)).precision == "bf16"  # never by default
    c = choose(Machine(AMX, ALL), allow_int8=True)
    assert (c.backend, c.precision) == ("openvino", "int8") and "amx_int8" in c.reason
    assert choose(Machine(AVX2, ALL), allow_int8=True).precision == "fp32"  # no VNNI / AMX-int8
    assert choose(Machine(AMX, frozenset({"onnxruntime"})), allow_int8=True).backend == "torch"


VNNI = AVX2 | {"avx512f", "avx512_vnni"}  # int8 dot products, no native bf16 (e.g. Cascade Lake)
GOOD_IR = Int8Status(True, "validated int8 IR m/openvino/int8.xml: 99.62 % voxel agreement with fp32, mIoU -0.10",
                     Path("m/openvino/int8.xml"))
BAD_IR = Int8Status(False, "m/openvino/int8.xml is below the int8 gate: voxel agreement with fp32 83.30 % < 99%",
                    Path("m/openvino/int8.xml"))


@pytest.mark.parametrize("flags,ir,expected,words", [
    (AMX, GOOD_IR, "int8", ["amx_int8 (int8 dot products)", "99.62 % voxel agreement"]),
    (AVX512_BF16, GOOD_IR, "int8", ["avx512_vnni", "validated int8 IR"]),
    (VNNI, GOOD_IR, "int8", ["avx512_vnni"]),
    (AVX2, GOOD_IR, "fp32", ["int8 IR not used: no int8 dot-product hardware"]),
    (AMX, BAD_IR, "bf16", ["int8 IR not used", "below the int8 gate", "83.30 %"]),
    (VNNI, BAD_IR, "fp32", ["int8 IR not used", "below the int8 gate"]),
    (AMX, None, "bf16", ["amx_bf16"]),
], ids=["amx-validated", "avx512-validated", "vnni-validated", "avx2-validated", "amx-bad", "vnni-bad", "amx-none"])
def test_validated_int8_ir_is_picked_on_int8_hardware(flags, ir, expected, words):
    """A validated IR of the checkpoint + int8 hardware -> int8, the log line naming the flag and
    the IR's figures; an IR below the gate or no int8 hardware -> the usual choice, saying why not.

    Mutations tried: the validated-IR rule dropped from ``choose`` (the three validated cases pick
    bf16 / fp32); ``int8.ok`` not looked at (the two bad-IR cases pick int8); the why-not suffix
    dropped (the avx2 and bad cases fail on their words)."""
    c = choose(Machine(flags, ALL), int8=ir)
    assert (c.backend, c.precision) == ("openvino", expected), c.reason
    for w in words:
        assert w in c.reason, c.reason
    assert resolve("auto", "auto", "cpu", Machine(flags, ALL), int8=ir).precision == expected
    # int8 asked for is int8 whatever the IR (make_predictor's gate then refuses a bad one)
    assert resolve("auto", "int8", "cpu", Machine(AMX, ALL), int8=ir).precision == "int8"


def test_device_cpu_ignores_cuda_and_cuda_without_gpu_is_an_error():
    assert choose(Machine(AVX2, ALL, cuda=True), device="cpu").device == "cpu"
    with pytest.raises(ValueError, match="CUDA is not available"):
        choose(Machine(AVX2, ALL, cuda=False), device="cuda")
    with pytest.raises(ValueError, match="device must be"):
        choose(Machine(AVX2, ALL), device="tpu")


def test_named_backend_with_auto_precision_and_conflicts():
    assert resolve("torch", "auto", "cpu", Machine(AMX, ALL)).precision == "bf16"
    assert resolve("torch", "auto", "cpu", Machine(AVX2, ALL)).precision == "fp32"
    assert resolve("onnxruntime", "auto", "cpu", Machine(AMX, ALL)).precision == "fp32"
    assert resolve("torch", "auto", "auto", Machine(AVX2, ALL, cuda=True)).device == "cuda"
    assert resolve("openvino", "fp32", "auto", Machine(AVX2, ALL, cuda=True)).device == "cpu"
    with pytest.raises(ValueError, match="picks the precision too"):
        resolve("auto", "bf16", "cpu", Machine(AVX2, ALL))


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    p = tmp_path / "cpuinfo"
    p.write_text("processor\t: 0\nflags\t\t: fpu avx2 amx_bf16\n\nprocessor\t: 1\nflags\t\t: fpu avx2 amx_bf16\n")
    assert autoselect.cpu_flags(str(p)) == {"fpu", "avx2", "amx_bf16"}
    assert autoselect.cpu_flags(str(tmp_path / "missing")) == frozenset()
    p.write_text("model name\t: Some Xeon\nflags\t\t: fpu avx2 fma amx_bf16 amx_int8\n")
    s = autoselect.cpu_summary(str(p))
    assert s.startswith("Some Xeon, ") and "avx2 fma amx_bf16 amx_int8; no avx512f avx512_bf16" in s


def test_make_predictor_auto_falls_back_when_openvino_is_missing(tiny_checkpoint, monkeypatch):
    from benchmarks.inputs import synthetic_frame
    from priorocc_core.backends import make_predictor

    monkeypatch.setattr(autoselect, "probe", lambda: Machine(AVX2, frozenset({"onnxruntime"})))
    p = make_predictor(tiny_checkpoint, backend="auto", precision="auto", device="auto")
    assert (p.choice.backend, p.choice.precision) == ("onnxruntime", "fp32") and p.backend == "onnxruntime"
    f = synthetic_frame(seed=3)
    assert p.predict(f["images"], f["K"], f["cam2ego"]).occupancy.shape == (200, 200, 16)

    monkeypatch.setattr(autoselect, "probe", lambda: Machine(AVX2, frozenset()))
    p = make_predictor(tiny_checkpoint, backend="auto", precision="auto", device="auto")
    assert (p.choice.backend, p.choice.precision) == ("torch", "fp32") and "neither" in p.choice.reason


def test_node_logs_the_choice_and_publishes_it_in_diagnostics(tiny_checkpoint, monkeypatch):
    from priorocc_ros.node_core import OccupancyNodeCore
    from priorocc_ros.outputs import diagnostics_values
    from priorocc_ros.transport.loopback import LoopbackBus, LoopbackTransport

    monkeypatch.setattr(autoselect, "probe", lambda: Machine(AVX2, frozenset()))  # keep it torch: fast to load
    bus = LoopbackBus()
    t = LoopbackTransport("priorocc", bus, parameters={"checkpoint": str(tiny_checkpoint)})
    core = OccupancyNodeCore(t)  # backend / precision / device: the defaults, auto
    try:
        assert core.p["backend"] == "auto" and core.p["precision"] == "auto" and core.p["device"] == "auto"
        assert any("backend torch" in m and "precision fp32" in m and "neither" in m for m in t.logger.messages("info"))
        core.publish_diagnostics()
        d = diagnostics_values(bus.published["/diagnostics"][-1])
        assert d["backend"] == "torch" and d["precision"] == "fp32" and d["device"] == "cpu"
        assert "neither OpenVINO nor onnxruntime" in d["backend_reason"]
    finally:
        core.close()
