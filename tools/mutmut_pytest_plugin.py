"""A pytest plugin for mutation runs only (tools/mutation.sh loads it through [tool.mutmut]).

mutmut records each test by its id and hands the ids back to pytest for every mutant. pytest
cannot find a test again by an id it had to escape (a backslash, a control character or a lone
surrogate in a parameter), so such a test would fail every mutant's run, clean or not. They are
left out of mutation runs here; the normal test run keeps them.
"""

from __future__ import annotations

import re
from typing import Any

_UNFINDABLE = re.compile(r"\\(x[01][0-9a-f]|x7f|ud[89a-f][0-9a-f]{2}|[tnrfv\\])")


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    dropped = [item for item in items if _UNFINDABLE.search(item.nodeid)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if not _UNFINDABLE.search(item.nodeid)]
