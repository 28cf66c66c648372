"""The console's Content-Security-Policy: its pages run only its own scripts.

The console shows what operators and models wrote (version names, refusal messages,
audit details) and holds an operator's session: if any of it ever got past escaping,
a browser under this policy still runs no script it did not load from the console, and
sends nothing anywhere else. The one inline element, the viewer's style (which controls
they may use: swaps/console.py), carries the request's nonce.

The admin is left to Django's own headers: its pages are not built for a policy this
strict (Django 6.0 brings one of its own).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'nonce-{nonce}'; "
    "img-src 'self' data:; connect-src 'self'; font-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
EXEMPT_PREFIXES = ("/admin/",)


class ContentSecurityPolicy:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request.csp_nonce = secrets.token_urlsafe(16)
        response = self.get_response(request)
        if not request.path.startswith(EXEMPT_PREFIXES):
            response.setdefault("Content-Security-Policy", POLICY.format(nonce=request.csp_nonce))
        return response
