"""``--profile``: py-spy on the gateway while wrk saturates it with small requests.

py-spy (in the dev extra) samples the process from outside, without pausing it
(``--nonblocking``), and writes collapsed stacks; the top entries are computed here: by own
time (the innermost frame of a sample) and by total time (anywhere on the stack). Shares are of
the samples in which the gateway's thread was busy (py-spy leaves idle samples out).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

from bench import wrk
from bench.procs import PYTHON, child_setup

TOP = 20


def binary() -> str | None:
    local = PYTHON.parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


# Frames from the interpreter's start to the event loop are on every busy stack of the main
# thread; in the totals they would only push the interesting entries out of the top list.
LOOP_ENTRY = ("Runner.run ", "run_until_complete ", "BaseEventLoop.run_forever ")


def _loop_depth(frames: list[str]) -> int:
    """Index of the first frame inside the event loop (0 when the loop is not on the stack).
    The loop frame itself stays in the own-time list: uvloop's C loop is charged to it."""
    for i, frame in enumerate(frames):
        if frame.startswith(LOOP_ENTRY):
            return i + 1
    return 0


def top_entries(collapsed: str, n: int = TOP) -> dict[str, Any]:
    """Own and total shares per function from py-spy's raw (collapsed stack) output: one line
    per distinct stack, ``frame;frame;... count``, outermost frame first."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")[1:]  # the first entry names the process or thread
        if not frames:
            continue
        samples += count
        own[frames[-1]] += count
        for frame in set(frames[_loop_depth(frames) :]):
            total[frame] += count

    def share(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(f, round(100 * c / samples, 1)) for f, c in counter.most_common(n)]

    return {
        "samples": samples,
        "own": share(own) if samples else [],
        "total": share(total) if samples else [],
    }


async def record(
    pid: int, load: wrk.WrkRun, duration_s: float, work_dir: Path, cpus: set[int] | None
) -> dict[str, Any]:
    spy = binary()
    if not spy:
        return {"error": "py-spy is not installed (pip install py-spy, or the dev extra)"}
    out = work_dir / f"py-spy-{pid}.txt"
    argv = [
        spy,
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(max(1, round(duration_s))),
        "--rate",
        "250",
        "--format",
        "raw",
        "--function",
        "--nonblocking",
        "--output",
        str(out),
    ]
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, preexec_fn=child_setup(cpus)
    )
    try:
        result = await load.run()
        log, _ = await asyncio.to_thread(proc.communicate, timeout=duration_s + 30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
    if proc.returncode != 0 or not out.exists():
        return {
            "error": f"py-spy exited with {proc.returncode}: {log.decode(errors='replace')[-400:]}"
        }
    return {"rps": result["rps"], **top_entries(out.read_text())}
