"""Fuzz one target with atheris: ``python -m fuzz.run <target> [libFuzzer flags]``.

    nice .venv/bin/python -m fuzz.run http_head -runs=1000000 -max_len=4096

Targets: ``http_head``, ``host``, ``token`` (``fuzz/targets.py``). The gateway's modules are
instrumented for coverage; httptools is a C extension and is exercised but not instrumented.
Mutation starts from the target's seeds. A crash or broken invariant stops the run and writes
``crash-<sha1>`` in the current folder (replay it: ``python -m fuzz.run <target> crash-<sha1>``).
"""

from __future__ import annotations

import hashlib
import sys
import tempfile
from pathlib import Path

import atheris  # type: ignore[import-untyped]

with atheris.instrument_imports(include=["gateway"]):
    from fuzz.targets import SEEDS, TARGETS


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: python -m fuzz.run {{{','.join(TARGETS)}}} [libFuzzer flags]")
    name, flags = sys.argv[1], sys.argv[2:]
    target = TARGETS[name]
    for seed in SEEDS[name]:
        target(seed)  # the seeds must pass before fuzzing starts
    with tempfile.TemporaryDirectory(prefix=f"fuzz-{name}-") as corpus:
        # Mutations start from the seeds, and new inputs land in a folder that goes away.
        for seed in SEEDS[name]:
            (Path(corpus) / hashlib.sha1(seed).hexdigest()).write_bytes(seed)  # noqa: S324
        atheris.Setup([sys.argv[0], *flags, corpus], target)
        atheris.Fuzz()


if __name__ == "__main__":
    main()
