"""The ablation's report: class groups, paired comparison across seeds, noisy-label corruption."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))

from priorocc_core.classes import OCC_CLASSES  # noqa: E402


def _run(variant, seed, miou, car=None, drive=50.0):
    pc = {c: None for c in OCC_CLASSES[:-1]}
    pc.update(car=car, driveable_surface=drive, manmade=10.0)
    return {"variant": variant, "seed": seed, "train_wall_s": 1.0,
            "eval": {"mIoU": miou, "RayIoU": miou / 2, "occ_mask_camera": {"per_class": pc}}}


def test_paired_comparison_by_hand():
    """diffs 1, 2, 3: mean 2, sd 1, 95 % interval 2 +- t(0.975, 2) / sqrt(3) = 2 +- 2.4841, t = 3.4641,
    two-sided p = 0.0742 (t distribution, 2 dof): not significant, and the sentence says so.
    Mutation tried: the interval with the normal 1.96 instead of t(2) fails."""
    import ablation

    runs = [_run("no_injector", s, 10.0) for s in range(3)] + [_run("injector", s, 10.0 + d) for s, d in enumerate((1, 2, 3))]
    c = ablation.paired(runs, "injector", "mIoU")
    assert c["n"] == 3 and c["wins"] == 3 and c["mean"] == pytest.approx(2.0) and c["sd"] == pytest.approx(1.0)
    assert c["ci"][0] == pytest.approx(2 - 2.4841, abs=1e-3) and c["ci"][1] == pytest.approx(2 + 2.4841, abs=1e-3)
    assert c["p"] == pytest.approx(0.0742, abs=1e-3)
    assert "not distinguishable" in ablation.verdict(c, "mIoU")
    runs += [_run("no_injector", 3, 10.0), _run("injector", 3, 12.0)]  # diffs 1, 2, 3, 2: t = 2 / (0.8165 / 2) = 4.899, 3 dof, p = 0.0163
    c = ablation.paired(runs, "injector", "mIoU")
    assert c["p"] == pytest.approx(0.0163, abs=1e-3) and "gain shown" in ablation.verdict(c, "mIoU")
    assert "one seed only" in ablation.verdict(ablation.paired(runs[:1] + runs[3:4], "injector", "mIoU"), "mIoU")


def test_groups_and_report(tmp_path):
    """Objects / ground / structures mIoU average the classes present; the report lands between markers
    in --results-md and a rerun replaces it without touching the rest of the file."""
    import argparse

    import ablation

    r = _run("injector", 0, 20.0, car=30.0)
    assert ablation.group_miou(r["eval"], "objects") == pytest.approx(30.0)
    assert ablation.group_miou(r["eval"], "ground") == pytest.approx(50.0)
    assert ablation.group_miou(_run("x", 0, 1.0)["eval"], "objects") is None
    md = tmp_path / "repo_RESULTS.md"
    md.write_text("# Results\n\nhand text\n")
    args = argparse.Namespace(config="c.yaml", iters=5, seeds=[0, 1], scenes=1, keyframes=2, world_seed=7, val_scenes=1,
                              labels="world", machine="test", results_md=str(md))
    runs = [_run("no_injector", s, 10.0) for s in (0, 1)] + [_run("injector", s, 11.0, car=5.0 * s) for s in (0, 1)]
    ablation.write_results(tmp_path, runs, args, ["cmd"])
    text = md.read_text()
    assert text.startswith("# Results\n\nhand text\n") and text.count(ablation.MARK_BEGIN) == 1
    assert "| injector | 2 |" in text and "1 of 2 seeds" in text and "paired t-test" in text
    ablation.write_results(tmp_path, runs[:2], args, ["cmd"])
    text = md.read_text()
    assert text.count(ablation.MARK_BEGIN) == 1 and "| injector | 2 |" not in text and "hand text" in text


def test_label_corruption_rate_and_ignore():
    """A fraction `rate` of the blocks changes class (to a class other than the block's majority);
    ignore pixels stay ignore; rate 0 changes nothing."""
    from corrupt_seg_labels import corrupt_label

    rng = np.random.default_rng(0)
    lab = np.repeat(np.repeat(rng.integers(0, 17, (40, 60)), 8, 0), 8, 1).astype(np.uint8)  # one class per block
    lab[:16] = 255
    noisy = corrupt_label(lab, 0.3, 8, np.random.default_rng(1))
    known = lab != 255
    assert (noisy[~known] == 255).all()
    assert abs((noisy[known] != lab[known]).mean() - 0.3) < 0.03
    assert np.array_equal(corrupt_label(lab, 0.0, 8, np.random.default_rng(1)), lab)


def test_parallel_runs_report_in_seed_order_and_count_failures(tmp_path, monkeypatch, capsys):
    """--jobs 2 trains two runs at a time with one thread each; the report lists runs seed-major in
    variant order whatever order they finish in; a failed run is named, the others still finish and
    are reported, and the command exits non-zero. Mutations tried: --jobs ignored (max_workers=1)
    fails the overlap check; dropping the sort fails the order check; letting the first failure
    propagate (no except) loses the runs after it and fails the count."""
    import threading
    import time

    import ablation

    active, peak, lock = [0], [0], threading.Lock()
    envs = []

    def fake_run(cmd, log, commands, env=None):
        commands.append(" ".join(cmd))
        script = Path(cmd[1]).name
        if script == "make_synthetic.py":
            Path(cmd[cmd.index("--out") + 1]).mkdir(parents=True, exist_ok=True)
            return 0.0
        if script == "train.py":
            wd = Path(cmd[cmd.index("--work-dir") + 1])
            opts = cmd[cmd.index("--cfg-options") + 1:]
            seed = int(next(o for o in opts if o.startswith("train.seed=")).split("=")[1])
            envs.append(env)
            with lock:
                active[0] += 1
                peak[0] = max(peak[0], active[0])
            slow = seed == 0 and "model.injector.enabled=true" in opts
            time.sleep(0.5 if slow else 0.05)  # injector seed 0 finishes last
            with lock:
                active[0] -= 1
            if seed == 1 and "model.injector.enabled=false" in opts:
                raise SystemExit("command failed (1): train no_injector seed 1")
            (wd / "final").mkdir(parents=True, exist_ok=True)
            (wd / "train_summary.json").write_text('{"steps": 3, "wall_s": 1.0}')
            return 0.0
        if script == "evaluate.py":
            r = _run("x", 0, 10.0, car=1.0)
            Path(cmd[cmd.index("--out") + 1]).write_text(__import__("json").dumps(r["eval"]))
            return 0.0
        raise AssertionError(cmd)

    monkeypatch.setattr(ablation, "run", fake_run)
    rc = ablation.main(["--out", str(tmp_path / "abl"), "--seeds", "0", "1", "2", "--iters", "3", "--jobs", "2"])
    assert rc == 2 and "ablation.py: error: 1 of 6 runs failed" in capsys.readouterr().err
    assert peak[0] == 2
    assert all(e is not None and e["OMP_NUM_THREADS"] == "1" for e in envs)
    runs = __import__("json").loads((tmp_path / "abl" / "results.json").read_text())["runs"]
    assert [(r["seed"], r["variant"]) for r in runs] == [
        (0, "injector"), (0, "no_injector"), (1, "injector"), (2, "injector"), (2, "no_injector")]


def test_conclusion_says_how_sure_it_is():
    """The generated conclusion: objects learned only when the best variant has car IoU > 0 in every
    seed; 'yes' only when the paired test is significant; otherwise 'not shown either way' with the
    size of difference the seeds could not resolve; noisy is compared with clean-label injector.
    Mutations tried: 'yes' on a positive mean without the p-test fails; comparing noisy with
    no_injector instead of injector fails; counting car >= 0 as learned fails."""
    import ablation

    base = [_run("no_injector", s, 10.0, car=1.0) for s in range(4)]
    inj = [_run("injector", s, 10.0 + d, car=2.0) for s, d in enumerate((1, 2, 3, 2))]  # p = 0.0163
    noisy = [_run("noisy", s, 10.0 + d, car=0.0 if s == 0 else 1.0) for s, d in enumerate((3, -1, 2, 0))]
    text = "\n".join(ablation.conclusion(base + inj + noisy))
    assert "**injector**, has car IoU > 0 in 4 of 4 seeds (the bar for 'objects learned' is met" in text
    assert "help over FlashOCC? **yes** at this budget: +2.00 mIoU" in text
    # noisy - injector = 2, -3, -1, -2: mean -1, not significant
    line = next(x for x in ablation.conclusion(base + inj + noisy) if x.startswith("- What do noisy"))
    # diffs 2, -3, -1, -2: sd 2.16, half-width t(0.975, 3) * 2.16 / 2 = 3.44
    assert "**not shown either way**: -1.00 mIoU" in line and "beyond about +-3.4 mIoU" in line
    flat = [_run("injector", s, 10.0 + d, car=0.0 if s == 1 else 3.0) for s, d in enumerate((2, -1, 1.5, 0.5))]
    text = "\n".join(ablation.conclusion(base + flat))
    assert "**injector**, has car IoU > 0 in 3 of 4 seeds (objects are **not** reliably learned" in text
    assert "**not shown either way**" in text


def test_report_only_trains_nothing_and_reports_what_was_evaluated(tmp_path, monkeypatch):
    """--report-only after an ablation stopped early: no command runs except the (done) world steps,
    and the report has exactly the evaluated runs. Mutation tried: ignoring --report-only trains the
    missing run (fake train called) and fails."""
    import json

    import ablation

    out = tmp_path / "abl"
    for v, seed in (("injector", 0), ("no_injector", 0), ("injector", 1)):
        wd = out / "runs" / f"{v}_seed{seed}"
        (wd / "final").mkdir(parents=True)
        (wd / "train_summary.json").write_text('{"steps": 3, "wall_s": 1.0}')
        (wd / "eval_val.json").write_text(json.dumps(_run(v, seed, 10.0 + seed, car=1.0)["eval"]))
    for w in ("world_train", "world_val"):
        (out / w).mkdir(parents=True)
        (out / w / ".complete").write_text("ok\n")
    called = []
    monkeypatch.setattr(ablation, "run", lambda cmd, *a, **k: called.append(cmd))
    assert ablation.main(["--out", str(out), "--seeds", "0", "1", "--iters", "3", "--report-only"]) == 0
    assert called == []
    runs = json.loads((out / "results.json").read_text())["runs"]
    assert [(r["seed"], r["variant"]) for r in runs] == [(0, "injector"), (0, "no_injector"), (1, "injector")]
    # the reproduce line is the command that trains what the report shows: without --report-only
    # (mutation tried: argv copied whole -> fails here)
    repro = (out / "RESULTS.md").read_text().split("```bash\n", 1)[1].split("\n", 1)[0]
    assert repro.startswith("python training/ablation.py --out ") and "--iters 3" in repro
    assert "--report-only" not in repro


def test_temporal_study_pairs_histories_with_the_single_frame_model(tmp_path, monkeypatch):
    """--study temporal: both worlds get the moving, turning ego; single_frame (num_adj 0), temporal
    (num_adj 1) and temporal2 (num_adj 2) train on the same seeds with nothing else changed; the
    report pairs each history with single_frame (mIoU, objects, RayIoU) and goes between its own
    markers, so the injector section of RESULTS.md stays. --study injector's worlds are unchanged
    (no motion arguments). Mutations tried: pairing with no_injector (the injector baseline) leaves
    the temporal report without its paired section and fails; writing between the injector markers
    replaces the injector section and fails; dropping --motion-args from the world command fails."""
    import json

    import ablation

    calls = []

    def fake_run(cmd, log, commands, env=None):
        commands.append(" ".join(cmd))
        calls.append(cmd)
        script = Path(cmd[1]).name
        if script == "make_synthetic.py":
            Path(cmd[cmd.index("--out") + 1]).mkdir(parents=True, exist_ok=True)
        elif script == "train.py":
            wd = Path(cmd[cmd.index("--work-dir") + 1])
            (wd / "final").mkdir(parents=True, exist_ok=True)
            (wd / "train_summary.json").write_text('{"steps": 3, "wall_s": 1.0}')
        elif script == "evaluate.py":
            wd = Path(cmd[3]).parent  # CONFIG CHECKPOINT: the run dir holds final/
            n = {"temporal": 1, "temporal2": 2}.get(wd.name.split("_seed")[0], 0)
            seed = int(wd.name.split("_seed")[1])
            Path(cmd[cmd.index("--out") + 1]).write_text(json.dumps(_run("x", 0, 10.0 + n + 0.5 * seed * n, car=1.0)["eval"]))
        return 0.0

    monkeypatch.setattr(ablation, "run", fake_run)
    md = tmp_path / "RESULTS.md"
    md.write_text(f"# Results\n\n{ablation.MARK_BEGIN}\ninjector section\n{ablation.MARK_END}\n")
    assert ablation.main(["--study", "temporal", "--out", str(tmp_path / "t"), "--seeds", "0", "1", "2", "--iters", "3",
                          "--results-md", str(md)]) == 0
    worlds = [c for c in calls if Path(c[1]).name == "make_synthetic.py"]
    assert len(worlds) == 2 and all(" ".join(c).endswith("--ego-speed 6 --turn-rate 8") for c in worlds)
    trains = {Path(c[c.index("--work-dir") + 1]).name: [o for o in c if o.startswith("model.")]
              for c in calls if Path(c[1]).name == "train.py"}
    assert trains["single_frame_seed0"] == ["model.temporal.num_adj=0"]
    assert trains["temporal_seed1"] == ["model.temporal.num_adj=1"] and trains["temporal2_seed2"] == ["model.temporal.num_adj=2"]
    text = md.read_text()
    assert "injector section" in text and "<!-- ablation.py:temporal:begin -->" in text
    assert "# Temporal ablation on a moving-ego synthetic world" in text
    # mIoU differences: temporal 1, 1.5, 2; temporal2 2, 3, 4 (RayIoU half of that): p = 0.035 for both
    assert "## Paired comparison with single_frame" in text and "- **temporal2**, RayIoU: +1.50 on average" in text
    assert "Does the BEV history of temporal (num_adj 1) help over the single-frame model? **yes** at this budget: " \
           "+1.50 mIoU" in text
    assert "Does the BEV history of temporal2 (num_adj 2) help over the single-frame model? **yes** at this budget: " \
           "+3.00 mIoU" in text
    assert "Ego motion of both worlds (make_synthetic.py): `--ego-speed 6 --turn-rate 8`" in text
    # the injector study's worlds stay as they were
    calls.clear()
    ablation.main(["--out", str(tmp_path / "i"), "--seeds", "0", "--iters", "3"])
    assert not any("--ego-speed" in c for c in calls if Path(c[1]).name == "make_synthetic.py")
    with pytest.raises(SystemExit):  # argparse's usage error, exit 2
        ablation.main(["--study", "temporal", "--out", str(tmp_path / "x"), "--noisy-rate", "0.3"])


def test_dropout_study_report(tmp_path):
    """--study dropout: metrics_of reads evaluate.py --each-camera-dropped's 'camera_dropped' into
    one mIoU per dropped camera, their mean and their worst; the report pairs dropout with
    no_dropout on each, by seed. Diffs of the mean over drops: 2, 3, 4 (seeds 0-2) -> mean +3.00,
    sd 1, interval 3 +- 2.4841, t = 5.196, p = 0.0351 (t, 2 dof: p = 1 - t / sqrt(t^2 + 2)): a gain
    shown. Mutation tried: the worst drop taken as max instead of min -> drop:worst 18.0, not 16.0:
    fails."""
    import argparse

    import ablation

    def run(variant, seed, full, drops):
        r = _run(variant, seed, full)
        r["eval"]["camera_dropped"] = {c: {"mIoU": v} for c, v in zip(("CAM_A", "CAM_B"), drops)}
        return r

    runs = []
    for s, d in enumerate((2.0, 3.0, 4.0)):
        runs += [run("dropout", s, 20.0, (16.0 + d, 18.0 + d)), run("no_dropout", s, 20.5, (16.0, 18.0))]
    m = ablation.metrics_of(runs[1])
    assert (m["drop:CAM_A"], m["drop:CAM_B"], m["drop:mean"], m["drop:worst"]) == (16.0, 18.0, 17.0, 16.0)
    assert m["drop:kept"] == pytest.approx(100 * 17.0 / 20.5)  # share of its own all-camera mIoU
    c = ablation.paired(runs, "dropout", "drop:mean", baseline="no_dropout")
    assert c["mean"] == pytest.approx(3.0) and c["p"] == pytest.approx(0.0351, abs=1e-3)
    text = "\n".join(ablation.conclusion(runs, "dropout"))
    assert "keep more? **yes, a gain shown**: +3.00" in text
    assert "what does dropout training cost? **a loss shown**: -0.50" not in text  # zero spread: no p, no claim
    table = "\n".join(ablation.dropout_table(runs, ["dropout", "no_dropout"]))
    assert "| CAM_A | 19.00 +- 0.82 | 16.00 +- 0.00 | +3.00" in table
    assert "| worst single drop | 19.00 +- 0.82 | 16.00 +- 0.00 |" in table
    assert "| none | 20.00 +- 0.00 | 20.50 +- 0.00 | -0.50" in table
    assert "| % of own all-camera mIoU kept | 100.00 +- 4.08 | 82.93 +- 0.00 | +17.07" in table  # (19, 20, 21) / 20
    md = tmp_path / "RESULTS.md"
    args = argparse.Namespace(config="c.yaml", iters=5, seeds=[0, 1, 2], scenes=1, keyframes=2, world_seed=7,
                              val_scenes=1, labels="world", machine="test", results_md=str(md), study="dropout")
    ablation.write_results(tmp_path, runs, args, ["cmd"])
    assert md.read_text().count("<!-- ablation.py:dropout:begin -->") == 1
    assert ablation.study_variants("dropout", dropout_rate=0.3)[0] == ("dropout", ["data.camera_dropout=0.3"])
