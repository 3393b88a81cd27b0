"""A numbered script (or ``python -m`` module) run in this process, as ``python SCRIPT ARGS`` runs it
from the repository root: the same ``if __name__ == "__main__"`` block, command line and exit
status. The demos, the synthetic benchmark and the tests chain several scripts, and a subprocess
for each would repeat 5-8 s of imports (torch, diffusers, transformers) every time. Tests that
look inside a script (its configured header, its ``main`` raising) load it with ``load_script``."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import runpy
import subprocess
import sys
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def exit_status(e: SystemExit) -> int:
    """The status ``python`` exits with on ``e``; a message (a non-integer code) goes to stderr."""
    if e.code is None:
        return 0
    if isinstance(e.code, int):
        return e.code
    print(e.code, file=sys.stderr)
    return 1


def _main(script: str) -> int:
    try:
        if script.endswith(".py"):
            runpy.run_path(str(ROOT / script), run_name="__main__")
        else:
            runpy.run_module(script, run_name="__main__", alter_sys=True)
    except SystemExit as e:
        return exit_status(e)
    except Exception:
        traceback.print_exc()  # what the interpreter prints before exiting with 1
        return 1
    return 0


def reset_accelerate() -> None:
    """Forget the Accelerator of the last run: its state is process-wide, and the next script
    would otherwise inherit its mixed precision and gradient accumulation."""
    state = sys.modules.get("accelerate.state")
    if state is not None:
        state.AcceleratorState._reset_state(reset_partial_state=True)
        state.GradientState._reset_state()


def run_script(script: str, *args, capture: bool = False) -> subprocess.CompletedProcess:
    """Run ``script`` (a file at the repository root, ``A1.pose_data_preprocessing.py``, or a
    module, ``src.synthetic.demo``) with ``args`` as its command line, from the repository root.
    Returns what ``subprocess.run`` would: the exit status and, with ``capture``, the text written
    to stdout and stderr (otherwise it is shown)."""
    argv = [str(a) for a in args]
    out, err = io.StringIO(), io.StringIO()
    saved_argv, saved_path, cwd = sys.argv, list(sys.path), os.getcwd()
    sys.argv = [script, *argv]
    os.chdir(ROOT)
    try:
        with contextlib.ExitStack() as streams:
            if capture:
                streams.enter_context(contextlib.redirect_stdout(out))
                streams.enter_context(contextlib.redirect_stderr(err))
            returncode = _main(script)
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path
        os.chdir(cwd)
        reset_accelerate()
    return subprocess.CompletedProcess([sys.executable, script, *argv], returncode,
                                       out.getvalue() if capture else None, err.getvalue() if capture else None)


def load_script(script: str, argv: list[str] | None = None):
    """``script`` (a path from the repository root) as a fresh module, its command line not run:
    (module, None); with ``argv``, its header configured from that command line as well:
    (module, cfg)."""
    from ..config import configure

    path = ROOT / script
    spec = importlib.util.spec_from_file_location(f"script_{path.stem.replace('.', '_')}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if argv is None:
        return module, None
    return module, configure(vars(module), presets=getattr(module, "PRESETS", None), argv=argv, quiet=True)
