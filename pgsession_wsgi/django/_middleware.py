"""Django's ``SessionMiddleware``, answering a database outage with a 503."""

from __future__ import annotations

from typing import Any

from django.contrib.sessions.middleware import SessionMiddleware as DjangoSessionMiddleware
from django.http import HttpResponse

from .._core.failure import UNAVAILABLE_BODY, log_failure
from ..errors import StoreUnavailable


def _unavailable(exc: StoreUnavailable) -> Any:
    """503, ``Retry-After: 5`` and the one log line every front end writes (not Django's too)."""
    status = log_failure(exc, "saving")
    response = HttpResponse(UNAVAILABLE_BODY, status=status, content_type="text/plain; charset=utf-8")
    response["Retry-After"] = "5"
    response._has_been_logged = True  # Django's log_response: logged once, here
    return response


class SessionMiddleware(DjangoSessionMiddleware):  # type: ignore[misc]  # django-stubs are not installed
    """Django's ``SessionMiddleware``, answering a database outage with a 503; use it in its place.

    A :class:`~pgsession_wsgi.StoreUnavailable` from the save or from a view's use of
    ``request.session`` becomes a plain-text 503 with ``Retry-After: 5`` and one log line, as in
    the WSGI and ASGI front ends, instead of Django's 500. Django handles every other exception.
    """

    def process_response(self, request: Any, response: Any) -> Any:
        """Django's: save the session and set its cookie; a 503 when the database is down."""
        try:
            return super().process_response(request, response)
        except StoreUnavailable as exc:
            return _unavailable(exc)

    def process_exception(self, request: Any, exception: BaseException) -> Any:
        """A 503 for a :class:`~pgsession_wsgi.StoreUnavailable` from the view; else None (Django's)."""
        if isinstance(exception, StoreUnavailable):
            return _unavailable(exception)
        return None
