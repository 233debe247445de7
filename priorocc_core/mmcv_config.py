"""Read an mmcv-style Python config file (FlashOCC, BEVDet, mmdet3d 0.x) without mmcv and without
running it.

    variables, notes = read_mmcv_config("projects/configs/flashocc/flashocc-r50.py")

The file is parsed with :mod:`ast` and only a small, side-effect-free subset is evaluated: literals,
``dict`` / ``list`` / ``tuple`` / ``len`` / ``range`` / ``min`` / ``max`` / ``abs`` / ``int`` /
``float`` / ``str`` / ``bool`` calls, arithmetic, comparisons, names bound earlier in the file,
subscripts and slices, f-strings, ``x[...] = ...``, ``d.update(...)`` / ``l.append(...)`` /
``l.extend(...)``, ``if`` and ``for`` over evaluated values. Anything else (imports, other calls,
functions, attribute access) is not run: the statement is skipped and named in ``notes`` with its
line, so nothing is dropped silently. ``_base_`` files are read the same way and merged as mmcv
does (the file's own keys win, dicts merge key by key unless ``_delete_=True``); a missing base file
is a note, and the file is then read stand-alone.
"""
from __future__ import annotations

import ast
import operator
from pathlib import Path
from typing import Any


class MMCVConfigError(ValueError):
    """A config file that cannot be read at all (missing, not Python, a cycle of _base_ files)."""


class _NotEvaluated(Exception):
    """An expression outside the evaluated subset."""


_MAX_LEN = 100_000  # no sequence or string larger than this is built (no memory bombs)


def _range(*args: int) -> range:
    r = range(*args)
    if len(r) > _MAX_LEN:
        raise _NotEvaluated(f"range longer than {_MAX_LEN}")
    return r


_CALLS = {"dict": dict, "list": list, "tuple": tuple, "len": len, "range": _range, "min": min, "max": max,
          "abs": abs, "int": int, "float": float, "str": str, "bool": bool, "round": round, "sum": sum}
_METHODS = {"update": dict, "append": list, "extend": list, "copy": (dict, list)}  # mutators on bound names
_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_CMPOPS = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
           ast.Gt: operator.gt, ast.GtE: operator.ge, ast.In: lambda a, b: a in b,
           ast.NotIn: lambda a, b: a not in b, ast.Is: operator.is_, ast.IsNot: operator.is_not}


def _bounded(v: Any) -> Any:
    if isinstance(v, (str, list, tuple, range)) and len(v) > _MAX_LEN:
        raise _NotEvaluated(f"result longer than {_MAX_LEN}")
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) > 10 ** 18:
        raise _NotEvaluated("integer too large")
    return v


class _Evaluator:
    def __init__(self, path: Path):
        self.path = path
        self.env: dict[str, Any] = {}
        self.notes: list[str] = []

    # ---------------------------------------------------------------- expressions
    def expr(self, n: ast.AST) -> Any:
        if isinstance(n, ast.Constant):
            return n.value
        if isinstance(n, ast.Name):
            if n.id in self.env:
                return self.env[n.id]
            raise _NotEvaluated(f"name {n.id!r} is not bound")
        if isinstance(n, (ast.List, ast.Tuple, ast.Set)):
            items = []
            for e in n.elts:
                if isinstance(e, ast.Starred):
                    items.extend(self.expr(e.value))
                else:
                    items.append(self.expr(e))
            return {ast.List: list, ast.Tuple: tuple, ast.Set: set}[type(n)](items)
        if isinstance(n, ast.Dict):
            out = {}
            for k, v in zip(n.keys, n.values):
                if k is None:  # {**other}
                    out.update(self.expr(v))
                else:
                    out[self.expr(k)] = self.expr(v)
            return out
        if isinstance(n, ast.BinOp) and type(n.op) in _BINOPS:
            a, b = self.expr(n.left), self.expr(n.right)
            if isinstance(n.op, ast.Pow) and (not isinstance(b, (int, float)) or abs(b) > 64):
                raise _NotEvaluated("exponent out of range")
            if isinstance(n.op, ast.Mult) and isinstance(a, (str, list, tuple)) and isinstance(b, int) \
                    and len(a) * b > _MAX_LEN:
                raise _NotEvaluated("repetition too large")
            return _bounded(_BINOPS[type(n.op)](a, b))
        if isinstance(n, ast.UnaryOp):
            v = self.expr(n.operand)
            ops = {ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Not: operator.not_}
            if type(n.op) in ops:
                return ops[type(n.op)](v)
        if isinstance(n, ast.BoolOp):
            vals = [self.expr(v) for v in n.values]
            return all(vals) if isinstance(n.op, ast.And) else any(vals)
        if isinstance(n, ast.Compare):
            left = self.expr(n.left)
            for op, right_n in zip(n.ops, n.comparators):
                right = self.expr(right_n)
                if not _CMPOPS[type(op)](left, right):
                    return False
                left = right
            return True
        if isinstance(n, ast.IfExp):
            return self.expr(n.body) if self.expr(n.test) else self.expr(n.orelse)
        if isinstance(n, ast.Subscript):
            return self.expr(n.value)[self.expr(n.slice)]
        if isinstance(n, ast.Slice):
            return slice(*(self.expr(p) if p is not None else None for p in (n.lower, n.upper, n.step)))
        if isinstance(n, ast.JoinedStr):
            parts = []
            for v in n.values:
                if isinstance(v, ast.FormattedValue):
                    if v.format_spec is not None or v.conversion != -1:
                        raise _NotEvaluated("f-string format spec")
                    parts.append(str(self.expr(v.value)))
                else:
                    parts.append(self.expr(v))
            return _bounded("".join(parts))
        if isinstance(n, ast.Call):
            return self.call(n)
        raise _NotEvaluated(f"{type(n).__name__} expression")

    def call(self, n: ast.Call) -> Any:
        args = []
        for a in n.args:
            if isinstance(a, ast.Starred):
                args.extend(self.expr(a.value))
            else:
                args.append(self.expr(a))
        kwargs = {}
        for k in n.keywords:
            if k.arg is None:
                kwargs.update(self.expr(k.value))
            else:
                kwargs[k.arg] = self.expr(k.value)
        if isinstance(n.func, ast.Name) and n.func.id in _CALLS and n.func.id not in self.env:
            return _bounded(_CALLS[n.func.id](*args, **kwargs))
        if isinstance(n.func, ast.Attribute) and n.func.attr in _METHODS:
            target = self.expr(n.func.value)
            if isinstance(target, _METHODS[n.func.attr]):
                return getattr(target, n.func.attr)(*args, **kwargs)
        raise _NotEvaluated(f"call of {ast.unparse(n.func)}()")

    # ---------------------------------------------------------------- statements
    def assign(self, target: ast.AST, value: Any) -> None:
        if isinstance(target, ast.Name):
            self.env[target.id] = value
        elif isinstance(target, ast.Subscript):
            container = self.expr(target.value)
            if not isinstance(container, (dict, list)):
                raise _NotEvaluated("item assignment on a non-container")
            container[self.expr(target.slice)] = value
        elif isinstance(target, (ast.Tuple, ast.List)):
            values = list(value)
            if len(values) != len(target.elts):
                raise _NotEvaluated("unpacking of a different length")
            for t, v in zip(target.elts, values):
                self.assign(t, v)
        else:
            raise _NotEvaluated(f"assignment to {type(target).__name__}")

    def run(self, body: list[ast.stmt]) -> None:
        for s in body:
            try:
                self.stmt(s)
            except _NotEvaluated as e:
                self.notes.append(f"{self.path.name}:{s.lineno}: not evaluated ({e}): "
                                  f"{ast.unparse(s).splitlines()[0][:100]}")
            except Exception as e:  # noqa: BLE001 - a failing operation inside the subset (KeyError, ...)
                self.notes.append(f"{self.path.name}:{s.lineno}: not evaluated ({type(e).__name__}: {e}): "
                                  f"{ast.unparse(s).splitlines()[0][:100]}")

    def stmt(self, s: ast.stmt) -> None:
        if isinstance(s, ast.Assign):
            value = self.expr(s.value)
            for t in s.targets:
                self.assign(t, value)
        elif isinstance(s, ast.AnnAssign) and s.value is not None:
            self.assign(s.target, self.expr(s.value))
        elif isinstance(s, ast.AugAssign) and type(s.op) in _BINOPS:
            load = ast.Name(s.target.id, ast.Load()) if isinstance(s.target, ast.Name) else s.target
            self.assign(s.target, _bounded(_BINOPS[type(s.op)](self.expr(load), self.expr(s.value))))
        elif isinstance(s, ast.Expr):
            if isinstance(s.value, ast.Constant):
                return  # docstring
            self.expr(s.value)
        elif isinstance(s, ast.If):
            self.run(s.body if self.expr(s.test) else s.orelse)
        elif isinstance(s, ast.For) and not s.orelse:
            for item in list(self.expr(s.iter))[:_MAX_LEN]:
                self.assign(s.target, item)
                self.run(s.body)
        elif isinstance(s, ast.Pass):
            return
        else:
            raise _NotEvaluated(f"{type(s).__name__} statement")


def _merge(base: dict, child: dict) -> dict:
    """mmcv's merge: child keys win; dicts merge recursively unless the child's has _delete_=True."""
    out = dict(base)
    for k, v in child.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and not v.get("_delete_", False):
            out[k] = _merge(out[k], v)
        else:
            out[k] = {kk: vv for kk, vv in v.items() if kk != "_delete_"} if isinstance(v, dict) else v
    return out


def read_mmcv_config(path: str | Path, _stack: tuple[Path, ...] = ()) -> tuple[dict, list[str]]:
    """Variables of the config file at ``path`` (after its ``_base_`` files) and the notes on what
    was not evaluated or not found. Raises :class:`MMCVConfigError` for a file that cannot be read."""
    path = Path(path)
    if not path.is_file():
        raise MMCVConfigError(f"config file {path} does not exist")
    if path.resolve() in _stack:
        raise MMCVConfigError(f"config file {path}: _base_ files form a cycle")
    try:
        tree = ast.parse(path.read_text(), filename=str(path))
    except (SyntaxError, UnicodeDecodeError, ValueError) as e:
        raise MMCVConfigError(f"config file {path} is not a Python config file: {e}") from None
    ev = _Evaluator(path)
    ev.run(tree.body)
    merged: dict = {}
    notes: list[str] = []
    bases = ev.env.pop("_base_", [])
    for b in [bases] if isinstance(bases, str) else list(bases):
        bp = (path.parent / str(b))
        if not bp.is_file():
            notes.append(f"_base_ file {b} not found beside {path.name}: its settings are not included")
            continue
        base_vars, base_notes = read_mmcv_config(bp, _stack + (path.resolve(),))
        merged = _merge(merged, base_vars)
        notes += base_notes
    return _merge(merged, ev.env), notes + ev.notes
