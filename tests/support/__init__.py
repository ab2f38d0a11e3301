"""The tests' helpers, imported as `tests.support.<module>` (pytest.ini puts the repository root on sys.path)."""
