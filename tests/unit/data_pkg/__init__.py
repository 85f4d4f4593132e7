"""Fixtures shared by the tests/unit/test_pkg_* files (pure code: no cluster, no API mocks)."""
