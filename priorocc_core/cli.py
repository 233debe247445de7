"""What every command-line tool shares: expected errors as one line, and the inference flags.

    def main(argv=None):
        return cli.run("priorocc_export", _main, argv)   # _main(argv) -> exit code

``run`` prints a :class:`~priorocc_core.errors.PriorOccError` (bad config, checkpoint, data
file, option), a ``SystemExit`` with a message and an ``OSError`` naming a file as ``prog: error:
message`` on stderr and returns 2; ``--debug`` anywhere on the command line shows the traceback
instead (:func:`add_debug_arg` lists it in ``--help``). ``add_inference_args`` / ``inference_options`` are the
one definition of ``--backend``, ``--precision``, ``--device`` and the one place a backend name
is resolved (:func:`resolve_backend`).
"""
from __future__ import annotations

import sys
from typing import Callable, Sequence

from .errors import PriorOccError

BACKENDS = ("torch", "onnxruntime", "openvino")
PRECISIONS = ("fp32", "bf16", "fp16", "int8")  # int8: OpenVINO only, an NNCF-quantised IR (quantize.py)
AUTO = "auto"  # backend / precision / device chosen by priorocc_core.autoselect
DEBUG_FLAG = "--debug"


class OptionError(PriorOccError):
    """An unknown backend / precision / device, or a combination this machine cannot run."""


def error_line(prog: str, message: str) -> str:
    """``prog: error: message`` on one line (the format argparse uses for bad arguments)."""
    return f"{prog}: error: {' '.join(str(message).split())}"


def run(prog: str, main: Callable[[list[str]], int], argv: Sequence[str] | None = None) -> int:
    """Call ``main(argv without --debug)``; expected errors -> one line on stderr, exit code 2.

    Expected: a :class:`PriorOccError`, ``SystemExit("message")`` (a tool's own stop with a
    reason; ``SystemExit(int)``, e.g. argparse's, passes through) and an ``OSError`` that names
    a file (a path given on the command line that is missing, a folder, unreadable)."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in args
    args = [a for a in args if a != DEBUG_FLAG]
    try:
        return main(args)
    except (PriorOccError, SystemExit, OSError) as e:
        if isinstance(e, SystemExit):
            if e.code is None or isinstance(e.code, int):
                raise
            msg = str(e.code)
        elif isinstance(e, OSError):
            if e.filename is None:
                raise
            msg = f"{e.filename}: {e.strerror or e}"
        else:
            msg = str(e)
        if debug:
            raise
        print(error_line(prog, msg) + f" (run with {DEBUG_FLAG} for a traceback)", file=sys.stderr)
        return 2


def add_debug_arg(parser) -> None:
    """List ``--debug`` in a tool's ``--help`` (:func:`run` reads it before the parser does)."""
    parser.add_argument(DEBUG_FLAG, action="store_true", help="show the traceback of an expected error")


def add_inference_args(parser, device_default: str | None = "cpu", auto: bool = False) -> None:
    """``--backend``, ``--precision``, ``--device`` for a tool's parser.
    ``auto``: all three default to ``auto`` (the fastest path this machine supports)."""
    b, p, d = (AUTO, AUTO, AUTO) if auto else ("torch", "fp32", device_default)
    parser.add_argument("--backend", default=b, help=f"inference runtime: {AUTO}, {', '.join(BACKENDS)} (default {b})")
    parser.add_argument("--precision", default=p,
                        help=f"{AUTO}, {', '.join(PRECISIONS)} (default {p}; fp16 needs CUDA, int8 OpenVINO)")
    parser.add_argument("--device", default=d,
                        help="auto, cpu or cuda" + (f" (default {d})" if d else " (default: cuda when available)"))


def resolve_choice(backend: str, precision: str = "fp32", device: str | None = "cpu", int8=None):
    """The one place a (backend, precision, device) triple is checked and resolved; any of them
    may be ``auto`` (:func:`priorocc_core.autoselect.resolve` picks it from this machine's CPU
    flags, runtimes and CUDA, and ``int8``: the checkpoint's int8 IR status when it has one).
    -> :class:`priorocc_core.autoselect.Choice` (with its reason)."""
    from .autoselect import Choice, resolve

    if AUTO in (backend, precision, str(device)):
        try:
            c = resolve(backend, precision, str(device or AUTO), int8=int8)
        except ValueError as e:
            raise OptionError(str(e)) from None
        return Choice(*resolve_backend(c.backend, c.precision, c.device), c.reason)
    b, p, d = resolve_backend(backend, precision, device)
    return Choice(b, p, d, "named")


def resolve_backend(backend: str, precision: str = "fp32", device: str | None = "cpu") -> tuple[str, str, str]:
    """Check a concrete (backend, precision, device) triple (``auto``: :func:`resolve_choice`)."""
    import torch

    if backend not in BACKENDS:
        raise OptionError(f"--backend {backend!r}: unknown; choose one of {', '.join(BACKENDS)}")
    if precision not in PRECISIONS:
        raise OptionError(f"--precision {precision!r}: unknown; choose one of {', '.join(PRECISIONS)}")
    device = str(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if not (device == "cpu" or device.startswith("cuda")):
        raise OptionError(f"--device {device!r}: expected cpu or cuda[:N]")
    if device.startswith("cuda") and backend == "torch" and not torch.cuda.is_available():
        raise OptionError("--device cuda asked for, but torch.cuda.is_available() is False")
    if backend == "torch" and device == "cpu" and precision == "fp16":
        raise OptionError("--precision fp16 on CPU is not supported by the torch backend (use bf16)")
    if backend == "onnxruntime" and precision != "fp32":
        raise OptionError(f"--backend onnxruntime: only --precision fp32 is supported, got {precision!r}")
    if precision == "int8" and backend != "openvino":
        raise OptionError(f"--precision int8 runs on OpenVINO only (--backend openvino), got {backend!r}")
    return backend, precision, device


def inference_options(args) -> dict:
    """(backend, precision, device) of parsed ``args`` as keyword arguments for ``make_predictor``
    (checked here; ``auto`` stays ``auto`` so that the predictor carries the choice's reason)."""
    c = resolve_choice(args.backend, args.precision, args.device)
    if AUTO in (args.backend, args.precision, str(args.device)):
        return {"backend": args.backend, "precision": args.precision, "device": args.device}
    return {"backend": c.backend, "precision": c.precision, "device": c.device}
