"""Entry point: ``.venv/bin/python -m bench.run [--quick] [--only http,sse,...]``.

``--only hmr`` runs the real-browser HMR benchmark instead (bench/hmr.py; on its own).

``python bench/run.py`` works too: the repository root is then put on sys.path, and bench/ is
taken off it, so that the modules here cannot shadow top-level packages (``gateway``).
"""

from __future__ import annotations

import sys
from pathlib import Path


def main() -> int:
    if not __package__:
        here = Path(__file__).resolve().parent
        sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
        sys.path.insert(0, str(here.parent))
    # `--only hmr` (alone) runs the browser HMR benchmark, bench/hmr.py, with the other options.
    argv = sys.argv[1:]
    for i, arg in enumerate(argv):
        width = 1 if arg == "--only=hmr" else 2 if argv[i : i + 2] == ["--only", "hmr"] else 0
        if width:
            from bench.hmr import main as hmr

            return hmr(argv[:i] + argv[i + width :])
    from bench.cli import main as run

    return run()


if __name__ == "__main__":
    raise SystemExit(main())
