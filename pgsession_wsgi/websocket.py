"""Internal: what the ASGI middleware and the Quart extension share about websockets.

Written once here so the two adapters cannot drift apart: the close codes, and the save made
where no cookie can be set any more (a websocket, or an HTTP response whose headers went out).
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, Callable

from .cookies import hash_session_id
from .core import Delete, Operation, SessionCore, run_async
from .errors import SessionError
from .session import Session

__all__ = ["CLOSE_ERROR", "CLOSE_UNAVAILABLE", "save_without_cookie"]

#: The close code of a handshake refused because the session store cannot be reached:
#: 1013, "Try Again Later".
CLOSE_UNAVAILABLE = 1013
#: The close code of a handshake refused for any other session error: 1011, "Internal Error".
CLOSE_ERROR = 1011


async def save_without_cookie(
    core: SessionCore, session: Session, execute: Callable[[Operation], Awaitable[Any]]
) -> None:
    """Save ``session`` now, where the browser can no longer be sent a cookie.

    A change that needs a new cookie is refused before anything is written. A session that
    ended elsewhere (its row deleted by a logout or a revocation, or expired) is not brought
    back: the save is dropped, or, written blind, the row it started under a new id (which no
    cookie could carry to the browser) is deleted again; either way this raises.

    :param core: the adapter's core.
    :param session: the connection's session.
    :param execute: the async store's ``execute``.
    :raises SessionError: the change needs a new cookie, or the session had ended.
    :raises StoreUnavailable: the database cannot be reached.
    """
    if core.late_save_refused(session):
        raise SessionError(
            "this session change needs a new cookie, which cannot be set any more (a websocket, "
            "or a response already started): make it in an HTTP request before its response "
            "starts (a new session, regenerate(), invalidate() or a login)"
        )
    before = session.state.session_id
    await run_async(core.save(session), execute)
    after = session.state.session_id
    if after == before:
        return
    if after is not None:  # written blind into a row that was gone: a new id nobody can use
        await execute(Delete(hash_session_id(after)))
        session.mark_saved(None)
    raise SessionError(
        "the session had ended (logged out, revoked or expired elsewhere) before this save, so "
        "the change was not saved: a new session needs a cookie, so start it with an HTTP "
        "request (e.g. log in again), then open the websocket again"
    )
