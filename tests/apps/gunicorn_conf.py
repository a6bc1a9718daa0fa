"""gunicorn settings for the tests: start the store (and its purge thread) in every worker."""

from __future__ import annotations

from typing import Any


def post_worker_init(worker: Any) -> None:
    from counter_app import store

    store.stats()  # the first store call creates the table if needed and starts the purger
