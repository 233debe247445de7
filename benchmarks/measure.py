"""Measuring helpers of the benchmark workers: wall-clock timing and the machine's matmul peaks."""
from __future__ import annotations

import statistics
import time


WARMUP = 3  # calls before the timed ones, per backend and per stage (docs/speed.md): the first build kernels and plans


# the peak a path is measured against: a matrix product of its own precision, same worker
SAME_PRECISION_PEAK = {("torch", "fp32"): ("torch mm", "fp32"), ("torch", "bf16"): ("torch mm", "bf16"),
                       ("onnxruntime", "fp32"): ("torch mm", "fp32"),
                       ("openvino", "fp32"): ("openvino 1x1 conv", "f32"),
                       ("openvino", "bf16"): ("openvino 1x1 conv", "bf16"),
                       ("openvino", "int8"): ("openvino 1x1 conv", "int8")}


def timeit(fn, repeats: int, warmup: int = WARMUP) -> dict:
    """Median / min / all of ``repeats`` wall-clock runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return {"median_s": statistics.median(ts), "min_s": min(ts), "runs_s": ts}


def matmul_peaks(size: int, repeats: int) -> dict:
    """Achieved GFLOP/s of one (size x size) @ (size x size) torch.mm in fp32 and in bf16."""
    import torch

    out = {"size": size, "torch_threads": torch.get_num_threads()}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a = torch.randn(size, size).to(dtype)
        b = torch.randn(size, size).to(dtype)
        t = timeit(lambda: torch.mm(a, b), repeats, warmup=1)
        out[f"{name}_gflops"] = 2 * size ** 3 / t["min_s"] / 1e9
    return out
