"""Django's async session methods (``aload``, ``asave``...): the sync ones in a thread (psycopg2)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from asgiref.sync import sync_to_async


class _Sync(Protocol):
    """The sync methods of ``SessionStore`` that the async ones run."""

    def load(self) -> dict[str, Any]: ...
    def save(self, must_create: bool = False) -> None: ...
    def flush(self) -> None: ...
    def cycle_key(self) -> None: ...
    def set_expiry(self, value: Any) -> None: ...
    def get_expiry_age(self, **kwargs: Any) -> int: ...
    def get_expiry_date(self, **kwargs: Any) -> datetime: ...
    def get_expire_at_browser_close(self) -> bool: ...


class AsyncMethods:
    """A mixin of ``SessionStore``: each async method runs its sync one in a thread."""

    async def aload(self: _Sync) -> dict[str, Any]:
        """:meth:`load`, in a thread."""
        return await sync_to_async(self.load)()

    async def asave(self: _Sync, must_create: bool = False) -> None:
        """:meth:`save`, in a thread."""
        await sync_to_async(self.save)(must_create)

    async def aflush(self: _Sync) -> None:
        """:meth:`flush`, in a thread."""
        await sync_to_async(self.flush)()

    async def acycle_key(self: _Sync) -> None:
        """:meth:`cycle_key`, in a thread."""
        await sync_to_async(self.cycle_key)()

    async def aset_expiry(self: _Sync, value: Any) -> None:
        """:meth:`set_expiry`, in a thread (it may load)."""
        await sync_to_async(self.set_expiry)(value)

    async def aget_expiry_age(self: _Sync, **kwargs: Any) -> int:
        """:meth:`get_expiry_age`, in a thread."""
        return await sync_to_async(self.get_expiry_age)(**kwargs)

    async def aget_expiry_date(self: _Sync, **kwargs: Any) -> datetime:
        """:meth:`get_expiry_date`, in a thread."""
        return await sync_to_async(self.get_expiry_date)(**kwargs)

    async def aget_expire_at_browser_close(self: _Sync) -> bool:
        """:meth:`get_expire_at_browser_close`, in a thread."""
        return await sync_to_async(self.get_expire_at_browser_close)()
