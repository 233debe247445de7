"""PriorOcc speed benchmark: one command, every figure a ratio taken in the same run.

    .venv/bin/python benchmarks/run.py --out benchmarks/results.json          # full (R50)
    .venv/bin/python benchmarks/run.py --quick --out /tmp/quick.json          # smoke test (tiny)

The parent process runs each measurement in a fresh worker process, one after another (never
two at once), so that every backend's peak RSS is its own and one backend's thread pool or
memory does not disturb the next. Each worker measures the fp32 and bf16 matmul peaks right
before its own timings, so ratios use peaks taken under the same machine load. The load
average is recorded before and after every worker. See docs/speed.md for what each figure
means.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.measure import SAME_PRECISION_PEAK, WARMUP, matmul_peaks, timeit  # noqa: E402
from priorocc_core.atomic import atomic_write_bytes  # noqa: E402
from priorocc_core.autoselect import cpu_flags, cpu_name  # noqa: E402

CONFIG_DIR = ROOT / "training" / "configs"


# =========================================================================== helpers (worker side)
def loadavg() -> list[float]:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def decode_jpegs(jpegs) -> list:
    import numpy as np
    from PIL import Image

    return [np.asarray(Image.open(io.BytesIO(j)).convert("RGB")) for j in jpegs]


def decode_jpegs_draft(jpegs, input_hw) -> list:
    """JPEG decode at a reduced DCT scale (PIL ``draft``: 1/2, 1/4, 1/8), never below the network
    input width; for the figure only (the caller would have to scale K by the same factor)."""
    import numpy as np
    from PIL import Image

    out = []
    for j in jpegs:
        im = Image.open(io.BytesIO(j))
        im.draft("RGB", (input_hw[1], input_hw[0]))  # smallest DCT scale keeping both sides >= these
        out.append(np.asarray(im.convert("RGB")))
    return out


# =========================================================================== workers
def work_stages(spec: dict) -> dict:
    """Per-stage latency and FLOPs of one config, torch eager fp32 NCHW, 1 x N x 3 x H x W."""
    from benchmarks.inputs import frame_inputs
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from priorocc_core.backends import make_predictor
    from priorocc_core.checkpoint import load_checkpoint
    from priorocc_core.inference import preprocess

    peaks = matmul_peaks(spec["matmul"], spec["peak_repeats"])
    model, cfg, _ = load_checkpoint(spec["checkpoint"])
    pred = make_predictor((model, cfg), channels_last=False)
    frame = frame_inputs(spec["frame"])
    reps = spec["repeats"]
    res: dict = {"peaks": peaks, "config": cfg.name, "input": list(cfg.model.image.input_size),
                 "cameras": len(cfg.model.image.cameras), "threads": torch.get_num_threads(), "stages": {}}
    st = res["stages"]
    st["jpeg_decode"] = timeit(lambda: decode_jpegs(frame["jpegs"]), reps)
    st["jpeg_decode_draft"] = timeit(lambda: decode_jpegs_draft(frame["jpegs"], cfg.model.image.input_size), reps)
    images = decode_jpegs(frame["jpegs"])
    st["preprocess"] = timeit(lambda: preprocess(images, frame["K"], frame["cam2ego"], cfg), reps)
    batch = preprocess(images, frame["K"], frame["cam2ego"], cfg)
    geo = [batch[k] for k in ("cam2ego", "K", "img_aug", "bev_aug")]
    planner = model.planner
    imgs = batch["imgs"].flatten(0, 1)

    def plan_fresh():
        planner._plan = None
        return planner(*geo)

    with torch.no_grad():
        st["pooling_plan_once_per_rig"] = timeit(plan_fresh, reps)
        plan = planner(*geo)
        feats = model.encode_images(imgs)
        feats2, seg = model.inject(feats)
        bev, _ = model.features_to_bev(feats2, plan)
        logits = model.bev_to_logits(bev)
        stage_fns = {
            "encode_images": lambda: model.encode_images(imgs),
            "inject": lambda: model.inject(feats),
            "features_to_bev": lambda: model.features_to_bev(feats2, plan),
            "bev_to_logits": lambda: model.bev_to_logits(bev),
            "argmax": lambda: logits.argmax(-1),
        }
        flops = {}
        for name, fn in stage_fns.items():
            with FlopCounterMode(display=False) as fc:
                fn()
            flops[name] = fc.get_total_flops()
            st[name] = timeit(fn, reps)
        st["network_total"] = timeit(lambda: model(batch, plan)["occ"], reps)
    st["predict_total"] = timeit(lambda: pred.predict(images, frame["K"], frame["cam2ego"]), reps)
    st["frame_total_from_jpeg"] = timeit(
        lambda: pred.predict(decode_jpegs(frame["jpegs"]), frame["K"], frame["cam2ego"]), reps)
    net_flops = sum(flops.values())
    res["gflops"] = {k: v / 1e9 for k, v in flops.items()} | {"network_total": net_flops / 1e9}
    t = st["network_total"]["median_s"]
    res["achieved_gflops_per_s"] = net_flops / 1e9 / t
    res["fraction_of_fp32_matmul_peak"] = res["achieved_gflops_per_s"] / peaks["fp32_gflops"]
    res["fraction_of_bf16_matmul_peak"] = res["achieved_gflops_per_s"] / peaks["bf16_gflops"]
    res["per_stage_fraction_of_fp32_peak"] = {
        k: (flops[k] / 1e9 / st[k]["median_s"]) / peaks["fp32_gflops"] for k in flops if flops[k]}
    res["peak_rss_mib"] = peak_rss_mib()
    return res


def work_backend(spec: dict) -> dict:
    """One backend / precision: frame latency from 1600x900 JPEGs, node overhead, labels, RSS."""
    from benchmarks.inputs import frame_inputs
    import numpy as np
    import torch

    from priorocc_core.backends import make_predictor

    rss0 = peak_rss_mib()
    peaks = matmul_peaks(spec["matmul"], spec["peak_repeats"])
    ov_rates = None
    if spec["backend"] == "openvino":  # OpenVINO's own rates: f32, bf16 hint, int8 (benchmarks/precision.py)
        from benchmarks.precision import openvino_matmul_rates

        ov_rates = openvino_matmul_rates(min(spec["matmul"], 1024), spec["peak_repeats"] + 2)
    rss_after_peaks = peak_rss_mib()
    t = time.perf_counter()
    opts = dict(spec.get("opts", {}))
    pred = make_predictor(spec["checkpoint"], spec["backend"], spec["precision"], **opts)
    build_s = time.perf_counter() - t
    reps = spec["repeats"]
    res: dict = {"backend": spec["backend"], "precision": spec["precision"], "opts": spec.get("opts", {}),
                 "label": spec["label"], "config": pred.cfg.name, "build_s": build_s, "peaks": peaks,
                 "torch_threads": torch.get_num_threads(), "frames": {}}
    for kind in spec["frames"]:
        try:
            frame = frame_inputs(kind)
        except FileNotFoundError as e:
            res["frames"][kind] = {"skipped": str(e)}
            continue
        records = []

        def one():
            t0 = time.perf_counter()
            images = decode_jpegs(frame["jpegs"])
            t1 = time.perf_counter()
            out = pred.predict(images, frame["K"], frame["cam2ego"])
            t2 = time.perf_counter()
            records.append(dict(jpeg_decode=t1 - t0, frame=t2 - t0, **out.timings))
            return out

        for _ in range(spec.get("warmup", 3)):  # first calls build the plan and oneDNN / runtime kernels
            out = one()
        records.clear()
        for _ in range(reps):
            one()
        med = {k: statistics.median(r[k] for r in records) for k in records[0]}
        overhead = med["jpeg_decode"] + med["preprocess"] + med["postprocess"]
        res["frames"][kind] = {
            "median_s": med, "runs_frame_s": [r["frame"] for r in records],
            "node_overhead_s": overhead, "node_overhead_fraction_of_network": overhead / med["model"],
        }
        lab = Path(spec["labels_dir"]) / f"{spec['label']}__{kind}.npz"
        lab.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(lab, occ=out.occupancy, seg=out.seg2d if out.seg2d is not None else np.zeros(0, np.uint8))
        res["frames"][kind]["labels"] = str(lab)
    res["peak_rss_mib"] = peak_rss_mib()
    res["rss_before_backend_mib"] = rss_after_peaks
    res["rss_at_start_mib"] = rss0
    # the peaks again after the timings, the higher of the two kept: on a shared machine one
    # short measurement can fall into a busy moment and make a path look above its peak
    after = matmul_peaks(spec["matmul"], spec["peak_repeats"])
    best = {k: max(v, after[k]) if k.endswith("_gflops") else v for k, v in peaks.items()}
    if ov_rates:
        ov_after = openvino_matmul_rates(min(spec["matmul"], 1024), spec["peak_repeats"] + 2)
        ov_rates = {k: max(v, ov_after[k]) if k.endswith("_gflops") else v for k, v in ov_rates.items()}
    res["peaks_after"] = after
    res["fraction_of_peak"] = _fraction_of_peak(spec, res, best, ov_rates)
    return res


def _fraction_of_peak(spec: dict, res: dict, peaks: dict, ov_rates: dict | None) -> dict:
    """Network GFLOP (FlopCounterMode, after the RSS was read) / network time, over the rate of a
    matmul (torch) or 1x1 convolution (OpenVINO) of the same precision measured in this worker."""
    from benchmarks.frame import network_gflop

    kind = "real" if "real" in res["frames"] and "median_s" in res["frames"]["real"] else "synthetic"
    f = res["frames"].get(kind, {})
    if "median_s" not in f:
        return {}
    gflop = network_gflop(spec["checkpoint"], frame_inputs(kind))
    what, prec = SAME_PRECISION_PEAK[(spec["backend"], spec["precision"])]
    peak = (ov_rates or {}).get(f"{prec}_gflops") if what.startswith("openvino") else peaks[f"{prec}_gflops"]
    achieved = gflop / f["median_s"]["model"]
    out = {"frame": kind, "network_gflop": gflop, "achieved_gflops_per_s": achieved, "peak": f"{what} {prec}",
           "peak_gflops_per_s": peak, "fraction": achieved / peak if peak else None}
    if ov_rates:
        out["openvino_rates"] = ov_rates
    return out


def work_pool(spec: dict) -> dict:
    """BEV pooling vs the cumulative-sum reference on identical inputs (R50 geometry)."""
    from benchmarks.inputs import frame_inputs
    import numpy as np
    import torch

    from priorocc_core.config import Config
    from priorocc_core.inference import preprocess
    from priorocc_core.model.bev_pool import (bev_pool, bev_pool_cumsum_reference, bev_pool_index_add,
                                              bev_pool_sparse, pooling_indices)
    from priorocc_core.model.plan import PoolingPlanner

    cfg = Config.from_yaml(spec["config_path"])
    m = cfg.model
    frame = frame_inputs(spec["frame"])
    batch = preprocess(frame["images"], frame["K"], frame["cam2ego"], cfg)
    geo = [batch[k] for k in ("cam2ego", "K", "img_aug", "bev_aug")]
    planner = PoolingPlanner.from_config(m)
    planner.cache = False  # timed from scratch below
    lower, interval = planner.lower, planner.interval
    coords = planner.ego_coords(*geo)  # (1, N, D, fH, fW, 3)
    b, n, d, fh, fw, _ = coords.shape
    c = m.view_transformer.out_channels
    g = torch.Generator().manual_seed(0)
    depth = torch.randn(b, n, d, fh, fw, generator=g).softmax(2)
    feat = torch.randn(b, n, fh, fw, c, generator=g)
    size = m.grid.size_xyz
    reps = spec["repeats"]
    with torch.no_grad():
        plan = pooling_indices(coords, lower, interval, size)
        ours = bev_pool(depth, feat, plan)
        ref = bev_pool_cumsum_reference(coords, depth, feat, lower, interval, size)
        diff = (ours - ref).abs().max().item()
        diff_index_add = (bev_pool_index_add(depth, feat, plan) - ref).abs().max().item()
        bev_pool_sparse(depth, feat, plan)  # builds the plan's sparse structure (once per rig)
        t_ours = timeit(lambda: bev_pool(depth, feat, plan), reps)
        t_index_add = timeit(lambda: bev_pool_index_add(depth, feat, plan), reps)
        t_csr_build = timeit(lambda: pooling_indices(coords, lower, interval, size).csr(n * fh * fw), reps)
        t_ref = timeit(lambda: bev_pool_cumsum_reference(coords, depth, feat, lower, interval, size), reps)
        t_plan = timeit(lambda: pooling_indices(coords, lower, interval, size), reps)
        t_geo = timeit(lambda: planner(*geo), reps)
    return {
        "config": cfg.name, "frame": frame["token"], "points": b * n * d * fh * fw, "kept_points": int(plan.ranks_bev.numel()),
        "channels": c, "max_abs_diff": diff, "max_abs_value": ref.abs().max().item(),
        "bev_pool_s": t_ours, "cumsum_reference_s": t_ref, "speedup_vs_reference": t_ref["median_s"] / t_ours["median_s"],
        "index_add_s": t_index_add, "index_add_max_abs_diff": diff_index_add,
        "index_add_speedup_vs_reference": t_ref["median_s"] / t_index_add["median_s"],
        "plan_with_sparse_structure_s": t_csr_build,
        "pooling_indices_s": t_plan, "plan_from_calibration_s": t_geo,
        "speedup_incl_plan": t_ref["median_s"] / (t_ours["median_s"] + t_plan["median_s"]),
        "threads": torch.get_num_threads(), "peak_rss_mib": peak_rss_mib(),
    }


def work_scaling(spec: dict) -> dict:
    """Network latency vs input size and number of cameras for one backend (synthetic rig)."""
    import numpy as np
    import torch

    from benchmarks.inputs import synthetic_frame
    from priorocc_core.backends import make_predictor
    from priorocc_core.checkpoint import load_checkpoint
    from priorocc_core.classes import CAMERAS
    from priorocc_core.model import build_model

    model, cfg, _ = load_checkpoint(spec["checkpoint"])
    rows = []
    for hw, ncam in spec["points"]:
        c = cfg.with_overrides([f"model.image.input_size=[{hw[0]},{hw[1]}]",
                                f"model.image.cameras=[{','.join(CAMERAS[:ncam])}]"])
        m2 = build_model(c.model)  # the frustum depends on the input size; the weights do not
        m2.load_state_dict(model.state_dict())
        opts = dict(spec.get("opts", {}))
        if spec["backend"] != "torch":
            opts["cache_dir"] = str(Path(spec["workdir"]) / "scaling" / f"{hw[0]}x{hw[1]}_{ncam}")
        pred = make_predictor((m2.eval(), c), spec["backend"], spec["precision"], **opts)
        frame = synthetic_frame(n=ncam, seed=0)
        pred.predict(frame["images"], frame["K"], frame["cam2ego"])
        ts = [pred.predict(frame["images"], frame["K"], frame["cam2ego"]).timings["model"] for _ in range(spec["repeats"])]
        rows.append({"input_hw": hw, "cameras": ncam, "model_median_s": statistics.median(ts)})
        del pred
    return {"backend": spec["backend"], "precision": spec["precision"], "rows": rows, "peak_rss_mib": peak_rss_mib()}


def work_export(spec: dict) -> dict:
    from priorocc_core.checkpoint import load_checkpoint
    from priorocc_core.export import export_onnx, verify_onnx

    model, cfg, _ = load_checkpoint(spec["checkpoint"])
    t = time.perf_counter()
    path = export_onnx(model, cfg, spec["onnx_path"])
    res = {"export_s": time.perf_counter() - t, "onnx_mb": path.stat().st_size / 1e6}
    res["verify"] = verify_onnx(model, cfg, path)
    return res


def work_frame(spec: dict) -> dict:
    from benchmarks.frame import work_frame as frame_worker

    return frame_worker(spec)


WORKERS = {"stages": work_stages, "backend": work_backend, "pool": work_pool, "scaling": work_scaling,
           "export": work_export, "frame": work_frame}


def worker_main(spec_json: str) -> None:
    spec = json.loads(spec_json)
    if spec.get("threads"):
        import torch

        torch.set_num_threads(int(spec["threads"]))
    before = loadavg()
    t = time.perf_counter()
    res = WORKERS[spec["task"]](spec)
    res["wall_s"] = time.perf_counter() - t
    res["loadavg_before"], res["loadavg_after"] = before, loadavg()
    print("RESULT " + json.dumps(res), flush=True)


# =========================================================================== parent
def run_worker(spec: dict, log) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=str(ROOT))
    line = next((l for l in reversed(p.stdout.splitlines()) if l.startswith("RESULT ")), None)
    if p.returncode != 0 or line is None:
        err = (p.stderr or "").strip().splitlines()[-15:]
        log(f"  FAILED ({p.returncode}): " + " | ".join(err))
        return {"error": "\n".join(err), "returncode": p.returncode, "spec": spec}
    res = json.loads(line[len("RESULT "):])
    log(f"  done in {time.perf_counter() - t:.1f} s (load {res['loadavg_before']} -> {res['loadavg_after']})")
    return res


def make_checkpoint(config_name: str, workdir: Path) -> Path:
    """A randomly initialised (seed 0) checkpoint of a config, reused between runs."""
    import torch

    from priorocc_core.checkpoint import save_checkpoint
    from priorocc_core.config import Config
    from priorocc_core.model import build_model

    path = workdir / "checkpoints" / config_name
    if not (path / "model.safetensors").is_file():
        cfg = Config.from_yaml(CONFIG_DIR / f"{config_name}.yaml")
        torch.manual_seed(0)
        save_checkpoint(path, build_model(cfg.model), cfg, extra_meta={"weights": "random (seed 0)"})
    return path


def agreement(a: str, b: str) -> dict:
    import numpy as np

    x, y = np.load(a), np.load(b)
    out = {"occ": float((x["occ"] == y["occ"]).mean())}
    if x["seg"].size and y["seg"].size:
        out["seg"] = float((x["seg"] == y["seg"]).mean())
    return out


BACKEND_MATRIX = [  # label, backend, precision, options
    ("torch-fp32-nchw", "torch", "fp32", {"channels_last": False}),
    ("torch-fp32-channels_last", "torch", "fp32", {"channels_last": True}),
    ("torch-bf16-channels_last", "torch", "bf16", {"channels_last": True}),
    ("onnxruntime-fp32", "onnxruntime", "fp32", {}),
    ("openvino-fp32", "openvino", "fp32", {}),
    ("openvino-bf16", "openvino", "bf16", {}),
]


QUICK_NOTE = ("--quick is a smoke test of the benchmark code (tiny config, {repeats} timed run(s), {matmul}^2 matmul "
              "peaks): its times and speed-ups are NOT comparable with each other or with BENCHMARKS.md; run "
              "without --quick for figures")


def run_settings(quick: bool, repeats: int | None = None, matmul: int | None = None) -> dict:
    """Repeats, matmul size, warm-up calls and (quick) the note that the figures are not comparable."""
    s = {"repeats": repeats or (1 if quick else 5), "matmul": matmul or (1024 if quick else 4096),
         "peak_repeats": 1 if quick else 2, "warmup": WARMUP}
    s["note"] = QUICK_NOTE.format(**s) if quick else None
    return s


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="PriorOcc speed benchmark (see docs/speed.md)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results.json"), help="JSON file to write")
    ap.add_argument("--quick", action="store_true", help="smoke test: tiny config, 1 repeat, small matmul")
    ap.add_argument("--configs", default=None,
                    help="comma-separated configs for the backend matrix (default flashocc-r50-m0,flashocc-r50,priorocc-r50)")
    ap.add_argument("--stage-config", default=None, help="config of the per-stage table (default priorocc-r50)")
    ap.add_argument("--sections", default="stages,pool,backends,scaling",
                    help="which parts to run: stages, pool, backends, scaling, frame (JPEG bytes to messages per "
                         "--frame-backends, benchmarks/frame.py)")
    ap.add_argument("--frame-backends", default="auto:auto,openvino:fp32,openvino:int8",
                    help="section frame: backend:precision pairs (int8 needs --int8 IR per config)")
    ap.add_argument("--frame-sets", type=int, default=10,
                    help="section frame: sets per pipelined run (steady state over them, >= 2)")
    ap.add_argument("--frame-modes", default="exact,fused,fast",
                    help="section frame: preprocessing modes (benchmarks/frame.py MODES), comma-separated; "
                         "exact first (the others' voxel agreement is against it)")
    ap.add_argument("--frame-rounds", type=int, default=2,
                    help="section frame: interleaved rounds of network alone then the pipelined frame")
    ap.add_argument("--int8", action="append", default=[], metavar="CONFIG=IR.xml",
                    help="sections frame and backends (row openvino-int8): the priorocc_quantize IR of a config "
                         "(repeatable)")
    ap.add_argument("--backends", default=None, help="comma-separated labels of BACKEND_MATRIX to run (default all)")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile (slow to compile)")
    ap.add_argument("--checkpoint", action="append", default=[],
                    help="a trained checkpoint to use instead of random weights for its config (repeatable)")
    ap.add_argument("--repeats", type=int, default=None, help="timed runs per figure (default 5, quick 1)")
    ap.add_argument("--matmul", type=int, default=None, help="matmul size for the peaks (default 4096, quick 1024)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads in every worker (default torch's)")
    ap.add_argument("--workdir", default=None, help="checkpoints / ONNX files / labels (default a temp folder)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        worker_main(a.worker)
        return 0

    quick = a.quick
    settings = run_settings(quick, a.repeats, a.matmul)
    repeats, matmul = settings["repeats"], settings["matmul"]
    configs = (a.configs or ("tiny" if quick else "flashocc-r50-m0,flashocc-r50,priorocc-r50")).split(",")
    stage_config = a.stage_config or ("tiny" if quick else "priorocc-r50")
    sections = set(a.sections.split(","))
    workdir = Path(a.workdir) if a.workdir else Path(tempfile.mkdtemp(prefix="priorocc-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    out_path = Path(a.out)

    from priorocc_core.checkpoint import read_checkpoint

    trained = {}
    for ck in a.checkpoint:
        _, cfg, _ = read_checkpoint(ck)
        trained[cfg.name] = Path(ck)

    def ckpt(name):
        return str(trained.get(name) or make_checkpoint(name, workdir))

    import torch

    results: dict = {
        "command": " ".join([Path(sys.executable).name, "benchmarks/run.py"] + (argv if argv is not None else sys.argv[1:])),
        "machine": {"platform": platform.platform(), "processor": cpu_name(), "cpu_count": os.cpu_count(),
                    "cpu_flags": _cpu_flags(), "torch": torch.__version__, "python": platform.python_version()},
        "started": time.strftime("%Y-%m-%d %H:%M:%S"), "loadavg_start": loadavg(), "quick": quick,
        "repeats": repeats, "matmul_size": matmul, "warmup": settings["warmup"], "comparable": not quick,
        "note": settings["note"],
        "weights": {c: ("trained: " + str(trained[c])) if c in trained else "random (seed 0)"
                    for c in set(configs) | {stage_config}},
    }
    t_start = time.perf_counter()
    log = lambda s: print(s, flush=True)  # noqa: E731
    if settings["note"]:
        log(f"note: {settings['note']}")
    common = dict(repeats=repeats, matmul=matmul, peak_repeats=settings["peak_repeats"], warmup=settings["warmup"],
                  threads=a.threads)
    frame = "real" if _real_present() else "synthetic"
    results["frame"] = frame

    def save():
        results["elapsed_s"] = time.perf_counter() - t_start
        results["loadavg_end"] = loadavg()
        atomic_write_bytes(out_path, json.dumps(results, indent=1).encode())

    if "stages" in sections:
        log(f"[stages] {stage_config}, torch eager fp32, {frame} frame")
        results["stages"] = run_worker(dict(common, task="stages", checkpoint=ckpt(stage_config), frame=frame), log)
        save()
    if "pool" in sections:
        pool_cfg = "tiny" if quick else "flashocc-r50"
        log(f"[pool] bev_pool vs cumulative-sum reference, {pool_cfg} geometry")
        results["pool"] = run_worker(dict(common, task="pool", config_path=str(CONFIG_DIR / f"{pool_cfg}.yaml"),
                                          frame=frame, repeats=max(repeats, 3)), log)
        save()
    if "backends" in sections:
        matrix = [m for m in BACKEND_MATRIX if a.backends is None or m[0] in a.backends.split(",")]
        if a.compile:
            matrix.append(("torch-fp32-compile", "torch", "fp32", {"channels_last": True, "compile": True}))
            matrix.append(("torch-bf16-compile", "torch", "bf16", {"channels_last": True, "compile": True}))
        results["backends"] = {}
        frames = ["real", "synthetic"] if frame == "real" else ["synthetic"]
        for cfg_name in configs:
            rows = results["backends"][cfg_name] = {}
            ck = ckpt(cfg_name)
            onnx_path = workdir / "onnx" / f"{cfg_name}.onnx"
            if any(m[1] != "torch" for m in matrix):
                log(f"[export] {cfg_name}")
                rows["_export"] = run_worker(dict(common, task="export", checkpoint=ck, onnx_path=str(onnx_path)), log)
            int8_irs = dict(x.split("=", 1) for x in a.int8)
            rows_matrix = list(matrix)
            if a.backends is None or "openvino-int8" in a.backends.split(","):
                if cfg_name in int8_irs:  # a priorocc_quantize IR (validated: make_predictor's gate)
                    rows_matrix.append(("openvino-int8", "openvino", "int8", {"int8_path": int8_irs[cfg_name]}))
                else:
                    log(f"[backend] {cfg_name} openvino-int8: skipped (no --int8 {cfg_name}=IR.xml)")
            for label, backend, precision, opts in rows_matrix:
                log(f"[backend] {cfg_name} {label}")
                o = dict(opts)
                if backend != "torch" and precision != "int8":
                    o["onnx_path"] = str(onnx_path)
                rows[label] = run_worker(dict(common, task="backend", checkpoint=ck, backend=backend, precision=precision,
                                              opts=o, label=f"{cfg_name}__{label}", frames=frames,
                                              labels_dir=str(workdir / "labels")), log)
                save()
            _summarise_backends(rows)
            save()
    if "scaling" in sections:
        best = _best_label(results.get("backends", {}).get(configs[0], {})) or "openvino-bf16"
        _, backend, precision, opts = next(m for m in BACKEND_MATRIX if m[0] == best) if any(
            m[0] == best for m in BACKEND_MATRIX) else BACKEND_MATRIX[-1]
        scale_cfg = configs[0]
        if quick:
            points = [[[64, 176], 6], [[128, 352], 6], [[64, 176], 3]]
        else:
            points = [[[128, 352], 6], [[256, 704], 6], [[384, 1056], 6], [[512, 1408], 6],
                      [[256, 704], 1], [[256, 704], 2], [[256, 704], 4]]
        log(f"[scaling] {scale_cfg} {best}")
        opts = {k: v for k, v in opts.items() if k != "onnx_path"}
        results["scaling"] = run_worker(dict(common, task="scaling", checkpoint=ckpt(scale_cfg), backend=backend,
                                             precision=precision, opts=opts, points=points, workdir=str(workdir),
                                             repeats=max(1, repeats // 2)), log)
        results["scaling"]["config"] = scale_cfg
        results["scaling"]["label"] = best
        save()
    if "frame" in sections:
        int8 = dict(x.split("=", 1) for x in a.int8)
        results["frame_sections"] = {}
        for cfg_name in configs:
            rows = results["frame_sections"][cfg_name] = {}
            for pair in a.frame_backends.split(","):
                backend, precision = pair.split(":")
                opts = {}
                if precision == "int8":
                    if cfg_name not in int8:
                        log(f"[frame] {cfg_name} {pair}: skipped (no --int8 {cfg_name}=IR.xml)")
                        continue
                    opts["int8_path"] = int8[cfg_name]
                log(f"[frame] {cfg_name} {pair}")
                rows[pair] = run_worker(dict(common, task="frame", checkpoint=ckpt(cfg_name), backend=backend,
                                             precision=precision, opts=opts, label=f"{cfg_name}__{pair}",
                                             frame=frame, sets=a.frame_sets, rounds=a.frame_rounds,
                                             modes=a.frame_modes.split(",")), log)
                save()
    save()
    _print_summary(results, log)
    if settings["note"]:
        log(f"\nnote: {settings['note']}")
    log(f"wrote {out_path} in {results['elapsed_s']:.0f} s")
    return 0


# =========================================================================== summaries
def _summarise_backends(rows: dict) -> None:
    base = rows.get("torch-fp32-nchw")
    if not base or "error" in base:
        return
    for label, r in rows.items():
        if label.startswith("_") or "error" in r:
            continue
        r["vs_torch_fp32_nchw"] = {}
        for kind, f in r["frames"].items():
            bf = base["frames"].get(kind, {})
            if "labels" not in f or "labels" not in bf:
                continue
            r["vs_torch_fp32_nchw"][kind] = {
                "speedup_model": bf["median_s"]["model"] / f["median_s"]["model"],
                "speedup_frame": bf["median_s"]["frame"] / f["median_s"]["frame"],
                "agreement": agreement(bf["labels"], f["labels"]),
            }


def _best_label(rows: dict) -> str | None:
    ok = {k: v for k, v in rows.items() if not k.startswith("_") and "error" not in v and v.get("frames")}
    if not ok:
        return None

    def t(v):
        f = next(iter(v["frames"].values()))
        return f["median_s"]["model"] if "median_s" in f else float("inf")

    return min(ok, key=lambda k: t(ok[k]))


def _print_summary(results: dict, log) -> None:
    st = results.get("stages")
    if st and "error" not in st:
        log(f"\n== {st['config']} per stage (torch eager fp32, {st['threads']} threads), median s ==")
        for k, v in st["stages"].items():
            g = st["gflops"].get(k)
            log(f"  {k:28s} {v['median_s']:8.4f}" + (f"   {g:8.1f} GFLOP" if g else ""))
        log(f"  network GFLOP {st['gflops']['network_total']:.1f}; achieved {st['achieved_gflops_per_s']:.1f} GFLOP/s = "
            f"{st['fraction_of_fp32_matmul_peak'] * 100:.1f}% of fp32 matmul ({st['peaks']['fp32_gflops']:.0f} GFLOP/s), "
            f"{st['fraction_of_bf16_matmul_peak'] * 100:.1f}% of bf16 matmul ({st['peaks']['bf16_gflops']:.0f} GFLOP/s); "
            f"peak RSS {st['peak_rss_mib']:.0f} MiB")
    p = results.get("pool")
    if p and "error" not in p:
        log(f"\n== BEV pooling ({p['config']}, {p['kept_points']}/{p['points']} points x {p['channels']} ch) ==")
        log(f"  bev_pool {p['bev_pool_s']['median_s'] * 1e3:.1f} ms, cumsum reference {p['cumsum_reference_s']['median_s'] * 1e3:.1f} ms"
            f" -> {p['speedup_vs_reference']:.1f}x (incl. plan {p['speedup_incl_plan']:.1f}x); max abs diff {p['max_abs_diff']:.2e}")
        log(f"  (gather + index_add variant {p['index_add_s']['median_s'] * 1e3:.1f} ms -> {p['index_add_speedup_vs_reference']:.1f}x)")
    for cfg_name, rows in results.get("backends", {}).items():
        log(f"\n== {cfg_name}: frame from 1600x900 JPEGs, median s ==")
        log(f"  {'backend':26s} {'model':>8s} {'frame':>8s} {'overhead':>9s} {'speedup':>8s} {'agree':>8s} {'RSS MiB':>8s}"
            f"  of peak (same precision)")
        for label, r in rows.items():
            if label.startswith("_"):
                continue
            if "error" in r:
                log(f"  {label:26s} ERROR {r['error'].splitlines()[-1] if r['error'] else ''}")
                continue
            kind = next(iter(r["frames"]))
            f = r["frames"][kind]
            if "median_s" not in f:
                continue
            vs = r.get("vs_torch_fp32_nchw", {}).get(kind, {})
            log(f"  {label:26s} {f['median_s']['model']:8.3f} {f['median_s']['frame']:8.3f} "
                f"{f['node_overhead_fraction_of_network'] * 100:8.1f}% {vs.get('speedup_model', float('nan')):7.2f}x "
                f"{vs.get('agreement', {}).get('occ', float('nan')) * 100:7.3f}% {r['peak_rss_mib']:8.0f}  "
                + (f"{fp['fraction'] * 100:5.1f}% of {fp['peak']} ({fp['achieved_gflops_per_s']:.1f} / "
                   f"{fp['peak_gflops_per_s']:.1f} GFLOP/s)" if (fp := r.get("fraction_of_peak")) and fp.get("fraction")
                   else ""))
    for cfg_name, rows in results.get("frame_sections", {}).items():
        log(f"\n== {cfg_name}: frame, JPEG bytes to serialised messages / network ==")
        for pair, r in rows.items():
            if "error" in r:
                log(f"  {pair:18s} ERROR {r['error'].splitlines()[-1] if r['error'] else ''}")
                continue
            fp = r.get("fraction_of_peak") or {}
            for mode, m in r["modes"].items():
                p = m.get("pipelined") or {}
                log(f"  {pair:18s} {mode:5s} network {m['network_s']:.3f} s  one at a time {m['frame_over_network']:.3f}"
                    + (f"  pipelined {p['frame_over_network']:.3f} (network alone {p['network_alone_s']:.3f} s, "
                       f"steady {p['steady_per_set_s']:.3f} s/set, overhead CPU {p['overhead_cpu_per_set_s'] * 1e3:.0f} ms/set = "
                       f"{p['cpu_frame_over_network']:.3f} of the network's {p['network_alone_cpu_s']:.2f} CPU s, "
                       f"load {', '.join('%.1f' % x['loadavg_1min'][0] for x in p['rounds'])})" if p else ""))
            if fp.get("fraction"):
                log(f"  {pair:18s} {fp['fraction'] * 100:.1f} % of {fp['peak']} ({r['achieved_gflops_per_s']:.1f} / "
                    f"{fp['peak_gflops_per_s']:.1f} GFLOP/s); voxel agreement with exact: "
                    + ", ".join(f"{k} {m['voxel_agreement_with_exact'] * 100:.3f} %" for k, m in r["modes"].items()))
    sc = results.get("scaling")
    if sc and "error" not in sc:
        log(f"\n== scaling ({sc['config']}, {sc['label']}) ==")
        for r in sc["rows"]:
            log(f"  {r['cameras']} x {r['input_hw'][0]}x{r['input_hw'][1]}: {r['model_median_s']:.3f} s")


def _cpu_flags() -> list[str]:
    return sorted(f for f in cpu_flags() if f.startswith(("avx512", "amx", "avx2", "fma")))


def _real_present() -> bool:
    from benchmarks.inputs import REAL_ROOT

    return (REAL_ROOT / "v1.0-mini").is_dir()


if __name__ == "__main__":
    sys.exit(main())
