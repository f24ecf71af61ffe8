"""Helpers the tests import (not tests themselves): reference-code loading for
tests/test_authors_*.py, and the rliable cross-check run by ``nox -s crosscheck``."""
