"""The console's pages and forms: guard, call the domain, render or redirect.

The forms call the same domain functions as the API (swapping, rollbacks), which check
permissions and audit every attempt. A refusal is rendered into the fragment the form
lives in, with the refusal's status (400, 403, 404, 409, 503): htmx swaps 4xx answers
in (base.html's htmx config), and without script the whole page comes back with the
message in place. Success answers an htmx request with the fresh fragment and a plain
form post with a redirect; what happens next arrives over the websocket.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import redirect_to_login
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from swaps import console, permissions, rollbacks, swapping
from swaps.models import ServedModel
from swaps.refusals import Refused
from swaps.registry import get_model

VIA = "session"
LIVE = "swaps/live.html"


def signed_in(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """login_required, but an htmx request is told to reload into the login page (401)
    instead of having the login page swapped into the fragment it targeted."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.user.is_authenticated:
            return view(request, *args, **kwargs)
        if request.headers.get("HX-Request"):
            response = HttpResponse("Your session ended: log in again.", status=401)
            response["HX-Redirect"] = redirect_to_login(request.get_full_path()).url
            return response
        return redirect_to_login(request.get_full_path())

    return wrapper


@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    return render(request, "swaps/dashboard.html", console.dashboard_context())


@login_required
def model_detail(request: HttpRequest, model: str) -> HttpResponse:
    return _model_page(request, model)


@login_required
def model_history(request: HttpRequest, model: str) -> HttpResponse:
    """Every operation of a model, a page at a time (the model page shows the newest)."""
    served = _served_or_404(model)
    context = console.history_context(served, request.GET.get("page", 1))
    return render(request, "swaps/model_archive.html", {**context, "part": "history"})


@login_required
def model_audit(request: HttpRequest, model: str) -> HttpResponse:
    served = _served_or_404(model)
    context = console.audit_context(served, request.GET.get("page", 1))
    return render(request, "swaps/model_archive.html", {**context, "part": "audit"})


def _served_or_404(model: str) -> ServedModel:
    try:
        return get_model(model)
    except Refused as missing:  # an unknown model: the site's 404 page, saying which
        raise Http404(missing.message) from None


@login_required
def approvals(request: HttpRequest) -> HttpResponse:
    try:
        permissions.require(request.user, permissions.APPROVE_ROLLBACK, action="see the queue")
    except Refused as refusal:
        return render(
            request, "swaps/approvals.html", {"forbidden": refusal.message}, status=refusal.status
        )
    return render(request, "swaps/approvals.html", console.approvals_context())


@require_POST
@signed_in
def start_swap(request: HttpRequest, model: str) -> HttpResponse:
    try:
        swap = swapping.start_swap(
            model=model,
            from_version=request.POST.get("from_version") or None,
            to_version=request.POST.get("to_version", ""),
            user=request.user,
            via=VIA,
            # An empty field is no force; a reason forces a swap the job would refuse.
            force=request.POST.get("force", "").strip() or None,
        )
    except Refused as refusal:
        return _model_page(request, model, "swap-form", refused=refusal)
    # The notice stays while pushes replace the rest: it says what stays true (the swap
    # was accepted), not how it goes ("is being loaded" beside a Failed card).
    accepted = timezone.localtime(swap.created_at).strftime("%H:%M:%S")
    notice = (
        f"Swap {swap.pk} to version {swap.to_version.version} accepted at {accepted}: "
        "it is loaded and checked before the flip; Now shows how it goes."
    )
    if swap.forced_reason:
        notice += f" Forced, even if it breaks clients: {swap.forced_reason}"
    return _model_page(request, model, "swap-form", notice=notice)


@require_POST
@signed_in
def request_rollback(request: HttpRequest, model: str) -> HttpResponse:
    try:
        rollback = rollbacks.request_rollback(
            model=model,
            target_version=request.POST.get("target_version", ""),
            reason=request.POST.get("reason", ""),
            user=request.user,
            via=VIA,
        )
    except Refused as refusal:
        return _model_page(request, model, "rollback", refused=refusal)
    version = rollback.target_version.version
    if rollback.state == rollback.State.PENDING:
        notice = f"Rollback to {version} requested: it waits for another user's approval."
    else:
        notice = f"Rolled back to {version}: the route flipped; the old version drains."
    return _model_page(request, model, "rollback", notice=notice)


@require_POST
@signed_in
def approve_rollback(request: HttpRequest, request_id: int) -> HttpResponse:
    return _decide(request, rollbacks.approve_rollback, request_id, "approved")


@require_POST
@signed_in
def reject_rollback(request: HttpRequest, request_id: int) -> HttpResponse:
    return _decide(request, rollbacks.reject_rollback, request_id, "rejected")


def _decide(request: HttpRequest, decide: Callable, request_id: int, verb: str) -> HttpResponse:
    context = {"decided_id": request_id}
    try:
        decide(request_id=request_id, user=request.user, via=VIA)
    except Refused as refused:
        context["error"] = refused.message
        return _page(request, "swaps/approvals.html", context, refused.status, "approvals")
    if not request.headers.get("HX-Request"):
        return redirect("swaps:approvals")
    context["notice"] = f"Rollback request {request_id} {verb}."
    return _page(request, "swaps/approvals.html", context, 200, "approvals")


def _model_page(
    request: HttpRequest,
    model: str,
    partial: str | None = None,
    *,
    refused: Refused | None = None,
    notice: str = "",
) -> HttpResponse:
    """The model page, or one fragment of it for htmx; a refusal shown in `partial`."""
    try:
        context = console.model_context(model)
    except Refused as missing:  # an unknown model: the site's 404 page, saying which
        raise Http404(missing.message) from None
    context.update(error=refused.message if refused else "", notice=notice, form=partial)
    if partial and not refused and not request.headers.get("HX-Request"):
        return redirect("swaps:model", model=model)
    if partial and request.headers.get("HX-Request"):
        return _answer(request, partial, context, _status(refused))
    context.update(console.versions_context(context["model"]))
    return render(request, "swaps/model_detail.html", context, status=_status(refused))


def _page(
    request: HttpRequest, template: str, extra: dict[str, Any], status: int, partial: str = ""
) -> HttpResponse:
    context = {**console.approvals_context(), **extra}
    if partial and request.headers.get("HX-Request"):
        return _answer(request, partial, context, status)
    return render(request, template, context, status=status)


def _answer(
    request: HttpRequest, partial: str, context: dict[str, Any], status: int
) -> HttpResponse:
    """A form's htmx answer: its fragment, swapped in out of band (see live.html)."""
    return render(request, f"{LIVE}#{partial}", {**context, "answer": True}, status=status)


def _status(refused: Refused | None) -> int:
    return refused.status if refused else 200
