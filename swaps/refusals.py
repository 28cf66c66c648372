"""Why the control plane refuses a request, as exceptions the API and CLI show as they are.

Each refusal is raised before anything changed (its audit entry aside), but for
OperationFailed, which says that an operation the caller started ran and failed.
`status` is the HTTP status the API answers with; `fields` names the input at fault.
"""

from __future__ import annotations

from typing import Any

from swaps.engine.errors import SwapError


class Refused(Exception):
    status = 400
    audited = False  # set once its audit entry is written (swaps.audit.attempt)

    def __init__(self, message: str, *, fields: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields or {}

    def details(self) -> dict[str, Any]:
        return {"fields": self.fields} if self.fields else {}


class NotAuthenticated(Refused):
    status = 401


class Forbidden(Refused):
    status = 403


class NotFound(Refused):
    status = 404


class Invalid(Refused):
    status = 400


class Conflict(Refused):
    status = 409


class TooLarge(Refused):
    status = 413


class Unavailable(Refused):
    """The fleet (Redis, or every replica) cannot be reached; nothing was changed."""

    status = 503


class OperationFailed(Refused):
    """An operation run within the request (an instant rollback) failed: nothing was
    changed in routing, and its records (the Failed swap, its audit entries) say why.
    An error status, so that a script never takes a failed rollback for a done one."""

    status = 409
    audited = True  # the operation's own audit entries tell it: accepted, then failed


class OperationUnavailable(OperationFailed):
    """As OperationFailed, because the fleet could not be reached: worth retrying."""

    status = 503


# The engine's refusal codes (swaps.engine.errors), as control-plane refusals.
_BY_ENGINE_CODE: dict[str, type[Refused]] = {
    "not_found": NotFound,
    "invalid": Invalid,
    "conflict": Conflict,
    "unhealthy": Invalid,
    "unavailable": Unavailable,
    "not_loaded": Unavailable,
}


def from_engine(error: SwapError) -> Refused:
    return _BY_ENGINE_CODE.get(error.code, Invalid)(error.message)


def invalid_fields(fields: dict[str, str]) -> Invalid:
    """One refusal naming every bad field, so a client can fix them all at once."""
    summary = "; ".join(f"{name}: {problem}" for name, problem in fields.items())
    return Invalid(f"invalid input ({summary})", fields=fields)
