"""The import graph of the repository: no cycle, no arrow back up, every core module imports alone.

The graph covers priorocc_core, priorocc_ros, training, benchmarks and tests, read from the source
with ``ast``: every ``import`` / ``from ... import`` anywhere in a module (function-level included)
is an edge to the module it names (``from .pkg import name`` is an edge to ``pkg.name`` when that is
a module, else to ``pkg``). training/ is a folder of scripts that put it on ``sys.path``: a bare
``from train import ...`` is an edge to ``training.train``. A package's ``__init__`` importing its own
submodules is not an edge back from them.

Layers, lowest first: priorocc_core; priorocc_ros and training (each on core only); benchmarks; tests.
Nothing imports a layer above its own (``ALLOWED``).

Mutation checks: adding ``from .export import export_onnx`` inside a function of model/plan.py
(export -> plan -> export) fails ``test_no_import_cycles`` naming the cycle; the old backends <-> export,
checkpoint <-> model/priorocc.py and benchmarks/frame.py <-> benchmarks/run.py pairs failed it before
they were broken. ``test_no_upward_imports`` failed on the tree of issue 24 (priorocc_core.quantize ->
benchmarks.inputs, benchmarks.ros_replay -> tests.ros_helpers), and fails again with ``from tests.conftest
import ROOT`` added inside a function of priorocc_ros/replay.py or ``import priorocc_ros.msgs`` in
priorocc_core/visualize.py.
"""
from __future__ import annotations

import ast
import os
import subprocess
import sys

from tests.conftest import ROOT

PKG = "priorocc_core"
TOPS = ("priorocc_core", "priorocc_ros", "training", "benchmarks", "tests")
SCRIPT_DIRS = ("training",)  # folders of scripts that import each other by bare name
ALLOWED = {  # which top-level folders a module of each may import
    "priorocc_core": {"priorocc_core"},
    "priorocc_ros": {"priorocc_core", "priorocc_ros"},
    "training": {"priorocc_core", "training"},
    "benchmarks": {"priorocc_core", "priorocc_ros", "training", "benchmarks"},
    "tests": set(TOPS),
}


def modules(tops=TOPS) -> dict[str, "os.PathLike"]:
    out = {}
    for top in tops:
        for path in sorted((ROOT / top).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _resolve(current: str, is_pkg: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = current.split(".") if is_pkg else current.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _known(t: str, mods: dict) -> str | None:
    """The module of ours that the absolute name ``t`` means, or None (third-party / stdlib)."""
    if t.split(".")[0] not in TOPS:
        for d in SCRIPT_DIRS:  # a script folder on sys.path: ``import train``
            if f"{d}.{t}" in mods or f"{d}.{t.split('.')[0]}" in mods:
                t = f"{d}.{t}"
                break
        else:
            return None
    while t and t not in mods:
        t = t.rsplit(".", 1)[0] if "." in t else ""  # import pkg.x.y: attribute of a module
    return t or None


def import_graph(tops=TOPS) -> dict[str, set[str]]:
    mods = modules(tops)
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(mod, is_pkg, node)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            for t in targets:
                t = _known(t, mods)
                if t and t != mod and not mod.startswith(t + "."):  # a submodule needs its package anyway
                    graph[mod].add(t)
    return graph


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Edges from a module to a top-level folder its own may not import (``ALLOWED``)."""
    return sorted(f"{m} -> {t}" for m, ts in graph.items() for t in ts
                  if t.split(".")[0] not in ALLOWED[m.split(".")[0]])


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str):
        state[m] = 1
        stack.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                return stack[stack.index(t):] + [t]
            if t not in state:
                c = visit(t)
                if c:
                    return c
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state:
            c = visit(m)
            if c:
                return c
    return None


def test_the_graph_sees_function_level_imports():
    g = import_graph()
    assert "priorocc_core.model" in g["priorocc_core.checkpoint"]  # load_checkpoint's function-level import
    assert "priorocc_core.export" in g["priorocc_core.backends"]  # _onnx_file's
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert "training.ablation" in g["training.demo_report"]  # a bare script import
    assert "training.train" in g["tests.test_train"]
    assert "priorocc_ros.msgs" in g["benchmarks.frame"]
    assert upward_imports({"priorocc_core.a": {"benchmarks.inputs", "priorocc_core.b"},
                           "priorocc_ros.x": {"tests.conftest", "training.train"},
                           "benchmarks.y": {"priorocc_ros.msgs"}}) == [
        "priorocc_core.a -> benchmarks.inputs", "priorocc_ros.x -> tests.conftest", "priorocc_ros.x -> training.train"]


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_upward_imports():
    """Nothing in priorocc_core, priorocc_ros or training imports benchmarks/ or tests/; core imports
    neither ROS nor training; benchmarks import no tests."""
    up = upward_imports(import_graph())
    assert not up, "imports against the layers: " + "; ".join(up)


IMPORT_EACH = r"""
import importlib, json, os, sys, traceback
import numpy, torch, PIL.Image, yaml, safetensors.torch  # third-party only: nothing of priorocc_core
assert not [m for m in sys.modules if m.startswith("priorocc_core")]
failed = {}
for name in sys.argv[1:]:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # a child with no priorocc_core module loaded imports this one module alone
        os.close(r)
        try:
            importlib.import_module(name)
            msg = ""
        except ImportError as e:  # the optional mm_plugin says it needs mmengine
            optional = name.startswith("priorocc_core.mm_plugin") and "mmengine" in str(e)
            msg = "" if optional else traceback.format_exc()
        except BaseException:
            msg = traceback.format_exc()
        os.write(w, msg.encode()[-4000:])
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        msg = f.read().decode()
    os.waitpid(pid, 0)
    if msg:
        failed[name] = msg.strip().splitlines()[-1]
print(json.dumps(failed))
"""


def test_every_module_imports_alone():
    """Each module imported alone: one interpreter loads only third-party packages, then a forked
    child per module imports it with no priorocc_core module loaded before (mm_plugin needs the
    optional mmengine: accepted when that is what is missing)."""
    import json

    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, "-c", IMPORT_EACH, *modules((PKG,))], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    failed = json.loads(res.stdout.strip().splitlines()[-1])
    assert not failed, failed


def renames_outside_atomic() -> list[str]:
    """Calls that move a file into place (os.replace / os.rename / shutil.move, ``path.replace(x)`` /
    ``path.rename(x)`` with one argument) anywhere but priorocc_core/atomic.py."""
    found = []
    for mod, path in modules(("priorocc_core", "priorocc_ros", "training", "benchmarks")).items():
        if mod == "priorocc_core.atomic":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            f, owner = node.func.attr, node.func.value
            named = isinstance(owner, ast.Name) and (owner.id, f) in {("os", "replace"), ("os", "rename"),
                                                                      ("shutil", "move")}
            method = f in ("replace", "rename") and len(node.args) == 1 and not node.keywords
            if named or method:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_every_atomic_write_goes_through_the_one_helper():
    """Files are moved into place only in priorocc_core/atomic.py (atomic_write_bytes / _with / _files,
    replace_dir): no writer renames a temporary file of its own.

    Mutation caught: save_calibration_yaml written back as ``tmp.write_text(...)`` +
    ``os.replace(tmp, p)`` (names priorocc_ros/calibration.py and its line); the tree of issue 24
    failed it in quantize.py, calibration.py, bagio.py, ablation.py and benchmarks/run.py."""
    found = renames_outside_atomic()
    assert not found, "moved into place outside priorocc_core/atomic.py: " + ", ".join(found)
