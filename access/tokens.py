"""Stream tokens: `?token=` for EventSource clients, which cannot send headers.

A token is a signed reference to a StreamGrant row (access/models.py), so that it can
outlive a reconnect or a night (CGM_STREAM_TOKEN_SECONDS, 24 h by default) and still be
refused at once when its issuer's access goes: key revoked, station removed, user
deactivated, or the login session it came from logged out.
"""

from datetime import timedelta
from importlib import import_module

from django.conf import settings
from django.contrib.auth import SESSION_KEY
from django.core import signing
from django.utils import timezone

from access.models import StreamGrant
from access.policy import Principal

SALT = "cgm.stream-token"


def issue_stream_token(principal: Principal, session_key: str = "") -> str:
    # Grants past their lifetime are of no use to anyone: cleared as new ones come.
    StreamGrant.objects.filter(issued_at__lt=timezone.now() - _lifetime()).delete()
    grant = StreamGrant.objects.create(
        user_id=principal.id if principal.kind == "user" else None,
        api_key_id=principal.id if principal.kind == "key" else None,
        session_key=session_key or "",
    )
    return signing.dumps({"g": grant.pk}, salt=SALT, compress=False)


def read_stream_token(token: str) -> Principal | None:
    """The token's principal (its grant named, checked on every access check), or None
    when the token is forged or its grant unknown, ended or expired."""
    try:
        data = signing.loads(token, salt=SALT, max_age=_lifetime())
    except signing.BadSignature:  # SignatureExpired is a BadSignature too
        return None
    grant_id = data.get("g")
    if not isinstance(grant_id, int):
        return None
    grant = StreamGrant.objects.filter(pk=grant_id).first()
    if grant is None:
        return None
    kind, pk = ("user", grant.user_id) if grant.user_id else ("key", grant.api_key_id)
    principal = Principal(kind, pk, grant=grant.pk)
    return principal if grant_is_live(principal) else None


def grant_is_live(principal: Principal) -> bool:
    grant = StreamGrant.objects.filter(pk=principal.grant).first()
    if grant is None or grant.ended_at is not None:
        return False
    if grant.issued_at < timezone.now() - _lifetime():
        return False
    return not grant.session_key or session_exists(grant.session_key)


def session_exists(session_key: str) -> bool:
    """True while that login session is live: not logged out, not expired. (The store's
    `exists()` would count an expired row that was not cleared yet.)"""
    engine = import_module(settings.SESSION_ENGINE)
    return engine.SessionStore(session_key).get(SESSION_KEY) is not None


def _lifetime() -> timedelta:
    return timedelta(seconds=settings.CGM_STREAM_TOKEN_SECONDS)
