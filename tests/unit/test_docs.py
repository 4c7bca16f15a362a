from __future__ import annotations

from pathlib import Path

from scripts.sync_readme import render

ROOT = Path(__file__).resolve().parents[2]


def test_readme_settings_table_matches_the_settings() -> None:
    readme = (ROOT / "README.md").read_text()
    assert render(readme) == readme, "run: .venv/bin/python scripts/sync_readme.py"
