"""The core's exceptions: one root, a flat family, each mapped to one HTTP status.

::

    CoreError                 root; never raised itself
     ├── BadRequest      400  the body or a parameter is not acceptable
     ├── Unauthorized    401  no or wrong bearer token
     ├── Forbidden       403  a node token used outside its venue, or on an admin path
     ├── NotFound        404  no such event, date, order, ticket, product, key or venue
     ├── Conflict        409  valid request, refused by the current state (sold out,
     │                        partial cancel of an unpaid invoice order, ...)
     └── StorageError    503  the database is busy or failing; retry later

Every error carries a stable machine ``code`` (the JSON ``error`` field) and a human
message. Refusals that are normal answers (a quick cancel of sold stock, a duplicate
scan) are values, not exceptions.
"""

from __future__ import annotations

from typing import ClassVar


class CoreError(Exception):
    """Root of every error the core raises on purpose."""

    status: ClassVar[int] = 400

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class BadRequest(CoreError):
    status = 400


class Unauthorized(CoreError):
    status = 401


class Forbidden(CoreError):
    status = 403


class NotFound(CoreError):
    status = 404


class Conflict(CoreError):
    status = 409


class StorageError(CoreError):
    status = 503


RETRYABLE: tuple[type[CoreError], ...] = (StorageError,)
"""Errors a client may retry unchanged."""
