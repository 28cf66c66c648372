"""The JSON API for automation (paths in api_urls.py): thin views over the domain.

Every view is wrapped by `endpoint`, which does what all of them share:

- who is asking: `Authorization: Bearer <token>` (automation; no CSRF, as no browser
  sends it on its own) or the session (the browser; CSRF enforced on unsafe methods);
  nobody: 401;
- the body of an unsafe request: at most HOTSWAP_API_MAX_BODY_BYTES (else 413), a JSON
  object (else 400);
- refusals as `{"error": message, "fields": {name: problem}}` with their status (400,
  401, 403, 404, 409, 413, 503), and every refused state-changing attempt audited once:
  the domain audits what reaches it, `endpoint` what it refuses before that.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.views.decorators.csrf import csrf_exempt

from swaps import (
    anonymous_audit,
    audit,
    documents,
    permissions,
    quarantine,
    registry,
    rollbacks,
    swapping,
    tokens,
)
from swaps.models import Swap
from swaps.refusals import (
    Forbidden,
    Invalid,
    NotAuthenticated,
    NotFound,
    Refused,
    TooLarge,
    invalid_fields,
)

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
NO_CREDENTIALS = "authentication required: log in, or send Authorization: Bearer <token>"
BAD_TOKEN = "the API token is not valid (unknown or revoked)"
BAD_SCHEME = "use Authorization: Bearer <token>"
CSRF_FAILED = "CSRF check failed ({reason}): send the csrftoken cookie's value as X-CSRFToken"
TOO_LARGE = "the request body is larger than {limit} bytes"
MALFORMED = "the request body is not valid JSON: {error}"
NOT_AN_OBJECT = "the request body must be a JSON object"
UNKNOWN_FIELD = "unknown field"
WRONG_METHOD = "{path} takes {allowed}, not {method}"
UNKNOWN_SWAP = "swap {swap_id} does not exist"

View = Callable[..., tuple[int, dict[str, Any]]]


def endpoint(
    *methods: str,
    action: str = "",
    fields: tuple[str, ...] = (),
    needs: tuple[str, str] | None = None,
) -> Callable:
    """Wrap a view `view(request, user, body, **url_kwargs) -> (status, document)`.

    `action` names the audit action of a state-changing endpoint; `fields` the body
    fields it reads (any other is refused, so a typo never passes silently); `needs` the
    permission it takes and what it does, checked before the body is read: someone
    without it gets 403 whatever they send, never a 400 about a body they may not send.
    The domain function checks the permission again, as it does for every caller.
    """

    def decorate(view: View) -> Callable:
        # CSRF is checked below, for session-authenticated unsafe requests only.
        @csrf_exempt
        @functools.wraps(view)
        def wrapper(request: HttpRequest, **kwargs: Any) -> JsonResponse:
            if request.method not in methods:
                response = _error(
                    405,
                    WRONG_METHOD.format(
                        path=request.path, allowed=", ".join(methods), method=request.method
                    ),
                )
                response["Allow"] = ", ".join(methods)
                return response
            user, via = None, "api"
            try:
                user, via = _authenticate(request)
                if needs is not None:
                    permissions.require(user, needs[0], action=needs[1])
                body: dict[str, Any] = {}
                if request.method not in SAFE_METHODS:
                    if via == "session":
                        _check_csrf(request)
                    body = _read_body(request, fields)
                status, document = view(request, user, body, via=via, **kwargs)
            except Refused as refusal:
                if action and not refusal.audited:
                    _audit_refusal(request, refusal, user, via, action, kwargs)
                return _refusal(refusal)
            return JsonResponse(document, status=status)

        return wrapper

    return decorate


def _audit_refusal(
    request: HttpRequest,
    refusal: Refused,
    user: Any,
    via: str,
    action: str,
    kwargs: dict[str, Any],
) -> None:
    details = {"path": request.path, **_ids(kwargs)}
    if isinstance(refusal, NotAuthenticated):  # anyone can send these: bounded
        unrecorded = anonymous_audit.admit(request.META.get("REMOTE_ADDR", ""))
        if unrecorded is None:
            return
        if unrecorded:
            details["unrecorded_before"] = unrecorded
    audit.Attempt(
        actor=user, via=via, action=action, model=kwargs.get("model", ""), details=details
    ).record("refused", error=refusal.message, **refusal.details())


# -- the views ------------------------------------------------------------------------------


@endpoint("GET")
def models(request, user, body, *, via):
    served = registry.all_models()
    return 200, {"models": [documents.model_document(m) for m in served]}


@endpoint("GET")
def model_detail(request, user, body, *, via, model):
    return 200, documents.model_document(registry.get_model(model), detail=True)


@endpoint(
    "POST",
    action=audit.REGISTER_VERSION,
    fields=registry.VERSION_FIELDS,
    needs=(permissions.REGISTER_VERSION, "register a version"),
)
def register_version(request, user, body, *, via, model):
    given = {name: body.get(name) for name in registry.VERSION_FIELDS}
    given["inputs"] = body.get("inputs", [])
    given["outputs"] = body.get("outputs", [])
    version = registry.register_version(model=model, **given, user=user, via=via)
    return 201, documents.version_document(version)


@endpoint(
    "POST", action=audit.RETIRE_VERSION, needs=(permissions.REGISTER_VERSION, "retire a version")
)
def retire_version(request, user, body, *, via, model, version):
    retired = registry.retire_version(model=model, version=version, user=user, via=via)
    return 200, documents.version_document(retired)


@endpoint(
    "POST",
    action=audit.RESTORE_VERSION,
    needs=(permissions.REGISTER_VERSION, "restore a version"),
)
def restore_version(request, user, body, *, via, model, version):
    restored = registry.retire_version(
        model=model, version=version, user=user, via=via, restore=True
    )
    return 200, documents.version_document(restored)


@endpoint(
    "POST",
    action=audit.CLEAR_QUARANTINE,
    needs=(permissions.REGISTER_VERSION, "clear a quarantine"),
)
def clear_quarantine(request, user, body, *, via, model, version):
    cleared = quarantine.clear(model=model, version=version, user=user, via=via)
    return 200, documents.version_document(cleared)


@endpoint(
    "POST",
    action=audit.START_SWAP,
    fields=("from_version", "to_version", "force"),
    needs=(permissions.START_SWAP, "start a swap"),
)
def start_swap(request, user, body, *, via, model):
    swap = swapping.start_swap(
        model=model,
        from_version=body.get("from_version"),
        to_version=body.get("to_version"),
        user=user,
        via=via,
        force=body.get("force"),
    )
    return 202, documents.swap_document(swap)


@endpoint("GET")
def swap_detail(request, user, body, *, via, swap_id):
    swap = (
        Swap.objects.select_related("served_model", "from_version", "to_version", "requested_by")
        .filter(pk=swap_id)
        .first()
    )
    if swap is None:
        raise NotFound(UNKNOWN_SWAP.format(swap_id=swap_id))
    return 200, documents.swap_document(swap)


@endpoint("GET")
def model_status(request, user, body, *, via, model):
    return 200, swapping.live_status(model=model).as_dict()


@endpoint(
    "POST",
    action=audit.REQUEST_ROLLBACK,
    fields=("target_version", "reason"),
    needs=(permissions.REQUEST_ROLLBACK, "request a rollback"),
)
def request_rollback(request, user, body, *, via, model):
    rollback = rollbacks.request_rollback(
        model=model,
        target_version=body.get("target_version"),
        reason=body.get("reason"),
        user=user,
        via=via,
    )
    return 202, documents.rollback_document(rollback)


@endpoint("GET")
def rollback_detail(request, user, body, *, via, request_id):
    return 200, documents.rollback_document(rollbacks.get_request(request_id))


@endpoint(
    "POST",
    action=audit.APPROVE_ROLLBACK,
    needs=(permissions.APPROVE_ROLLBACK, "approve a rollback"),
)
def approve_rollback(request, user, body, *, via, request_id):
    rollback = rollbacks.approve_rollback(request_id=request_id, user=user, via=via)
    return 202, documents.rollback_document(rollback)


@endpoint(
    "POST",
    action=audit.REJECT_ROLLBACK,
    needs=(permissions.APPROVE_ROLLBACK, "reject a rollback"),
)
def reject_rollback(request, user, body, *, via, request_id):
    rollback = rollbacks.reject_rollback(request_id=request_id, user=user, via=via)
    return 200, documents.rollback_document(rollback)


# -- what every endpoint shares ---------------------------------------------------------------


class _CsrfCheck(CsrfViewMiddleware):
    def _reject(self, request: HttpRequest, reason: str) -> str:  # type: ignore[override]
        return reason


def _authenticate(request: HttpRequest) -> tuple[Any, str]:
    """(user, via) from a bearer token or the session; raise for none or a bad one."""
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, secret = header.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise NotAuthenticated(BAD_SCHEME)
        user = tokens.user_for_secret(secret.strip())
        if user is None:
            raise NotAuthenticated(BAD_TOKEN)
        return user, "api"
    user = request.user
    if not user.is_authenticated:
        raise NotAuthenticated(NO_CREDENTIALS)
    return user, "session"


def _check_csrf(request: HttpRequest) -> None:
    """Django's own CSRF check, for a browser session's unsafe request."""
    check = _CsrfCheck(lambda request: None)
    check.process_request(request)
    reason = check.process_view(request, None, (), {})
    if reason:
        raise Forbidden(CSRF_FAILED.format(reason=reason))


def _read_body(request: HttpRequest, allowed: tuple[str, ...]) -> dict[str, Any]:
    limit = settings.HOTSWAP_API_MAX_BODY_BYTES
    try:
        declared = int(request.headers.get("Content-Length") or 0)
    except ValueError:
        declared = 0
    if declared > limit:
        raise TooLarge(TOO_LARGE.format(limit=limit))
    raw = request.body
    if len(raw) > limit:
        raise TooLarge(TOO_LARGE.format(limit=limit))
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested too deep
        raise Invalid(MALFORMED.format(error=exc)) from None
    if not isinstance(body, dict):
        raise Invalid(NOT_AN_OBJECT)
    unknown = {name: UNKNOWN_FIELD for name in body if name not in allowed}
    if unknown:
        raise invalid_fields(unknown)
    return body


def _refuse_constant(name: str) -> float:
    # Python's json reads NaN and Infinity, which JSON has not: stored in the audit log's
    # JSON column they made PostgreSQL and SQLite refuse the row, and the API answer a 500.
    raise ValueError(f"{name} is not a JSON value")


def _refusal(refusal: Refused) -> JsonResponse:
    response = _error(refusal.status, refusal.message, refusal.fields)
    if refusal.status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="hotswap"'
    return response


def _error(status: int, message: str, fields: dict[str, str] | None = None) -> JsonResponse:
    return JsonResponse({"error": message, "fields": fields or {}}, status=status)


def _ids(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in kwargs.items() if name != "model"}
