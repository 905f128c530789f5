"""Optional HMAC request signing for webhook senders, against tampering and replay.

    X-Cgm-Timestamp: <unix seconds>
    X-Cgm-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>." + body)>

The secret is the SHA-256 hex digest of the API key (the server stores only that
digest, never the key). Requests outside the replay window are refused.
"""

import hashlib
import hmac
import time

REPLAY_WINDOW_SECONDS = 300


class SignatureError(Exception):
    pass


def signature_for(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def sign_request(api_key: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """Headers a sender adds (used by the tests; a reference for integrators)."""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    secret = hashlib.sha256(api_key.encode()).hexdigest()
    return {"X-Cgm-Timestamp": stamp, "X-Cgm-Signature": signature_for(secret, stamp, body)}


def verify_signature(secret: str, headers, body: bytes, now: float | None = None) -> None:
    stamp = headers.get("X-Cgm-Timestamp", "")
    signature = headers.get("X-Cgm-Signature", "")
    if not stamp or not signature:
        raise SignatureError("This key requires X-Cgm-Timestamp and X-Cgm-Signature headers.")
    try:
        age = abs((time.time() if now is None else now) - int(stamp))
    except ValueError:
        raise SignatureError("X-Cgm-Timestamp must be unix seconds.") from None
    if age > REPLAY_WINDOW_SECONDS:
        raise SignatureError("X-Cgm-Timestamp is outside the replay window.")
    if not hmac.compare_digest(signature, signature_for(secret, stamp, body)):
        raise SignatureError("X-Cgm-Signature does not match the body.")
