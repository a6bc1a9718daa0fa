"""Tests that kill mutants the rest of the suite let survive (see tests/MUTATION.md).

Each test names the mutant(s) it was written for. Like every other test here they run against a
real PostgreSQL through the fixtures in conftest.py; nothing is mocked.
"""

from __future__ import annotations
