"""The stability audit as an importable pytest suite: `pytest --pyargs audit.suite`.

Options, fixtures and case generation come from the plugin (audit.plugin, entry point
pytest11); inside the repository `pytest tests/stability` collects the same tests.
"""
