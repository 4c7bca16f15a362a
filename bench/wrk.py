"""wrk runs and the parsing of its report.

Two modes:

* saturation (closed loop): ``-t1 -cC -dD``, every connection sends its next request as soon as
  the previous answer arrives; gives the maximum request rate on this machine.
* paced: the same, with a Lua ``delay()`` so each connection waits between requests. With C
  connections and a D ms delay the offered rate is at most ``C * 1000 / D`` req/s. It is not a
  true open-loop generator (wrk2 is not packaged), but it keeps the proxies below saturation, so
  its latencies show the per-request overhead and not queueing.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.procs import die_with_parent

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def binary() -> str | None:
    return shutil.which("wrk")


def version(path: str) -> str:
    out = subprocess.run([path, "-v"], capture_output=True, text=True, timeout=10, check=False)
    first = (out.stdout or out.stderr).strip().splitlines()
    return first[0].split(" [")[0].removeprefix("wrk ") if first else "?"


@dataclass
class WrkRun:
    argv: list[str]
    timeout_s: float

    def spawn(self) -> subprocess.Popen[str]:
        """Call from the main thread: the child is tied to the spawning thread's life."""
        return subprocess.Popen(
            self.argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            preexec_fn=die_with_parent,
        )

    def finish(self, proc: subprocess.Popen[str]) -> dict[str, float]:
        try:
            out, _ = proc.communicate(timeout=self.timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate(timeout=5)
            raise RuntimeError(f"wrk did not finish in {self.timeout_s}s") from None
        return parse(out)

    async def run(self) -> dict[str, float]:
        proc = self.spawn()
        try:
            return await asyncio.to_thread(self.finish, proc)
        finally:
            if proc.poll() is None:  # cancelled (Ctrl+C): do not leave wrk running
                proc.kill()
                proc.wait(timeout=5)


def command(
    path: str,
    url: str,
    host: str,
    *,
    connections: int,
    duration_s: float,
    delay_ms: float | None = None,
    work_dir: Path,
    headers: dict[str, str] | None = None,
) -> WrkRun:
    argv = [
        path,
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(duration_s))}s",
        "--latency",
        "--timeout",
        "5s",
        "-H",
        f"Host: {host}",
    ]
    for name, value in (headers or {}).items():
        argv += ["-H", f"{name}: {value}"]
    if delay_ms is not None:
        script = work_dir / f"delay_{delay_ms:g}.lua"
        script.write_text(f"function delay()\n  return {delay_ms:g}\nend\n")
        argv += ["-s", str(script)]
    argv.append(url)
    return WrkRun(argv, timeout_s=duration_s + 30)


def _ms(value: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value)
    if not match:
        raise ValueError(f"unparsable wrk latency {value!r}")
    return float(match[1]) * _UNITS[match[2]]


def parse(out: str) -> dict[str, float]:
    result: dict[str, float] = {"errors": 0, "non_2xx": 0}
    for line in out.splitlines():
        words = line.split()
        if line.startswith("Requests/sec:"):
            result["rps"] = float(words[1])
        elif re.match(r"\s+(50|75|90|99)%\s", line):
            result[f"p{words[0].rstrip('%')}_ms"] = _ms(words[1])
        elif line.strip().startswith("Socket errors:"):
            result["errors"] = sum(int(n) for n in re.findall(r"\d+", line))
        elif line.strip().startswith("Non-2xx or 3xx responses:"):
            result["non_2xx"] = int(words[-1])
        elif re.match(r"\s+\d+ requests in", line):
            result["requests"] = int(words[0])
    if "rps" not in result or "p99_ms" not in result:
        raise RuntimeError(f"wrk output not understood:\n{out}")
    return result
