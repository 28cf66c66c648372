"""Who may change what: the permissions, checked by the domain functions themselves.

Checking in the domain (not the views) means the API, the admin, the console and the
CLI all refuse the same things with the same words.
"""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

from swaps.refusals import Forbidden, NotAuthenticated

START_SWAP = "swaps.start_swap"
REQUEST_ROLLBACK = "swaps.request_rollback"
APPROVE_ROLLBACK = "swaps.approve_rollback"
REGISTER_VERSION = "swaps.register_version"
REGISTER_CODE = "swaps.register_code"
SET_ROLLBACK_APPROVAL = "swaps.set_rollback_approval"

NOT_AUTHENTICATED = "log in (or send an API token) to {action}"
NOT_PERMITTED = "{user} may not {action}: that needs the {permission} permission"

User = AbstractBaseUser | AnonymousUser | None


def require(user: User, permission: str, *, action: str) -> AbstractBaseUser:
    """The user, if signed in and holding `permission`; else a refusal saying which."""
    if user is None or not user.is_authenticated or not user.is_active:
        raise NotAuthenticated(NOT_AUTHENTICATED.format(action=action))
    if not user.has_perm(permission):
        raise Forbidden(
            NOT_PERMITTED.format(user=user.get_username(), action=action, permission=permission)
        )
    return user
