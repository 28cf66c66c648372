"""API tokens for automation: shown once when made, stored only as a SHA-256 digest.

A token is a random secret (`hs_` + 43 URL-safe characters, 256 bits). A plain digest
is enough: unlike a password the secret is random, so there is nothing to guess at.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.utils import timezone

from swaps import audit, permissions
from swaps.models import ApiToken

REVOKE = "revoke_api_token"
CHANGE_TOKENS = "swaps.change_apitoken"

SECRET_PREFIX = "hs_"
LAST_USED_RESOLUTION = timedelta(minutes=1)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_api_token(*, user: AbstractBaseUser, name: str, via: str) -> tuple[ApiToken, str]:
    """Make a token for `user`; return it and its secret (never retrievable again)."""
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(
        user=user, name=name, digest=digest(secret), prefix=secret[: len(SECRET_PREFIX) + 6]
    )
    audit.audit(
        actor=user,
        via=via,
        action=audit.CREATE_API_TOKEN,
        outcome="accepted",
        details={"token": token.pk, "name": name, "prefix": token.prefix},
    )
    return token, secret


def revoke_api_token(*, token: ApiToken, user: AbstractBaseUser, via: str) -> ApiToken:
    """Revoke a token: its owner may, anyone else needs the change_apitoken permission
    (seeing tokens in the admin is not enough to cut off someone else's automation)."""
    details = {"token": token.pk, "owner": token.user.get_username(), "prefix": token.prefix}
    with audit.attempt(actor=user, via=via, action=REVOKE, details=details) as record:
        if getattr(user, "pk", None) != token.user_id:
            permissions.require(user, CHANGE_TOKENS, action="revoke another user's API token")
        now = timezone.now()
        ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=now)
        record.accepted()
    token.refresh_from_db()
    return token


def user_for_secret(secret: str) -> AbstractBaseUser | None:
    """The active user a live token belongs to; None for unknown or revoked tokens."""
    if not secret.startswith(SECRET_PREFIX):
        return None
    token = (
        ApiToken.objects.select_related("user")
        .filter(digest=digest(secret), revoked_at__isnull=True)
        .first()
    )
    if token is None or not token.user.is_active:
        return None
    now = timezone.now()
    # To the minute is plenty for "when was this used", and spares most requests a write.
    if token.last_used_at is None or now - token.last_used_at > LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token.user
