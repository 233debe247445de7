"""priorocc_core has no import cycles, and every module imports on its own.

The graph is read from the source with ``ast``: every ``import`` / ``from ... import`` anywhere in a
module (function-level included) is an edge to the priorocc_core module it names (``from .pkg
import name`` is an edge to ``pkg.name`` when that is a module, else to ``pkg``). A package's
``__init__`` importing its own submodules is not an edge back from them. Mutation check: adding
``from .export import export_onnx`` inside a function of model/plan.py (export -> plan -> export)
fails ``test_no_import_cycles`` naming the cycle; the old backends <-> export and
checkpoint <-> model/priorocc.py pairs failed it before they were broken.
"""
from __future__ import annotations

import ast
import os
import subprocess
import sys

from tests.conftest import ROOT

PKG = "priorocc_core"


def modules() -> dict[str, "os.PathLike"]:
    out = {}
    for path in sorted((ROOT / PKG).rglob("*.py")):
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


def import_graph() -> dict[str, set[str]]:
    mods = modules()
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
                while t and t not in mods and t.startswith(PKG):
                    t = t.rsplit(".", 1)[0]  # import priorocc_core.x.y as attribute of a module
                if t in mods and t != mod and not mod.startswith(t + "."):  # a submodule needs its package anyway
                    graph[mod].add(t)
    return graph


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


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


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
    res = subprocess.run([sys.executable, "-c", IMPORT_EACH, *modules()], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    failed = json.loads(res.stdout.strip().splitlines()[-1])
    assert not failed, failed
