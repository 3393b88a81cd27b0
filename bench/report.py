"""What the benchmark runners share: a numbered script run as its command line, and their section
of bench/README.md."""

from __future__ import annotations

import time
from pathlib import Path


def run(name: str, script: str, *args: str) -> float:
    """Run a numbered script's command line in this process (output shown), stop on failure;
    returns seconds."""
    from src.util.scripts import run_script

    command = f"python {script} {' '.join(args)}"
    print(f"\n=== {name}: {command}", flush=True)
    start = time.time()
    result = run_script(script, *args)
    if result.returncode != 0:
        raise SystemExit(f"{name} failed (exit {result.returncode}): {command}")
    seconds = time.time() - start
    print(f"=== {name} done in {seconds:.0f}s", flush=True)
    return seconds


def publish(results: dict, path: Path, section: str, readme: str) -> None:
    """Write a benchmark's ``results`` to the JSON ``path``, print its README ``section`` and,
    unless ``readme`` is "", put the section in that file."""
    from src.util.fileio import atomic_write_json

    atomic_write_json(path, results)
    if readme:
        update_readme(Path(readme), section)
    print("\n" + section)


def update_readme(path: Path, section: str) -> None:
    """Replace (or append) the section of the README that starts with ``section``'s first line (its
    "## " heading), leaving every other section."""
    from src.util.fileio import atomic_write_text

    heading = section.splitlines()[0].strip()
    text = path.read_text() if path.is_file() else "# Benchmarks\n"
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == heading), None)
    if start is None:
        new = text.rstrip("\n") + "\n\n" + section
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        new = "\n".join(lines[:start] + section.rstrip("\n").splitlines() + ([""] + lines[end:] if end < len(lines)
                                                                              else [])) + "\n"
    atomic_write_text(path, new)
