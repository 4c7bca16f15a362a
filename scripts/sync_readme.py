"""Rewrites the settings table in README.md from gateway/settings.py (its docstrings)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.ops.settings import markdown_table  # noqa: E402

START, END = "<!-- settings:start -->", "<!-- settings:end -->"


def render(readme: str) -> str:
    block = f"{START}\n{markdown_table()}\n{END}"
    return re.sub(re.escape(START) + r".*?" + re.escape(END), lambda _: block, readme, flags=re.S)


if __name__ == "__main__":
    path = ROOT / "README.md"
    path.write_text(render(path.read_text()))
