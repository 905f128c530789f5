"""Short-lived signed stream tokens, for EventSource clients that cannot send headers."""

from django.core import signing

from access.policy import Principal

SALT = "cgm.stream-token"


def issue_stream_token(principal: Principal) -> str:
    return signing.dumps({"k": principal.kind, "i": principal.id}, salt=SALT, compress=False)


def read_stream_token(token: str, max_age: int) -> Principal | None:
    """The token's principal, or None when forged or expired."""
    try:
        data = signing.loads(token, salt=SALT, max_age=max_age)
    except signing.BadSignature:  # SignatureExpired is a BadSignature too
        return None
    if data.get("k") not in ("user", "key") or not isinstance(data.get("i"), int):
        return None
    return Principal(data["k"], data["i"])
