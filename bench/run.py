"""Entry point: ``.venv/bin/python -m bench.run [--quick] [--only http,sse,...]``.

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
    from bench.cli import main as run

    return run()


if __name__ == "__main__":
    raise SystemExit(main())
