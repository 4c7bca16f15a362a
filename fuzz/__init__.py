"""Coverage-guided fuzz targets (atheris) for the parsers that face the internet. Not part of the
pytest suite's collection; ``tests/unit/test_fuzz_targets.py`` runs each target on its seeds, and
``python -m fuzz.run <target> -runs=N`` fuzzes it (see ``docs/reliability.md``)."""
