"""What the ASGI lanes ahead of Django share (notifications/ingest_asgi.py, stream_asgi.py).

A lane serves the hot requests of one endpoint without Django's middleware stack. It
takes a request only when that stack would have nothing to add: no Origin (so no CORS
answer to give), a Host that ALLOWED_HOSTS accepts, and TLS where SECURE_SSL_REDIRECT
demands it. The security headers Django's SecurityMiddleware would set, a lane sets
from the same settings.
"""

from django.conf import settings
from django.http.request import split_domain_port, validate_host


class Headers(dict):
    """Request headers by lower-case name; get() takes any case, like Django's."""

    @classmethod
    def from_scope(cls, scope) -> "Headers":
        # Built once per request and kept on the scope: the router (takes_lane) and the
        # lane itself both need them.
        headers = scope.get("cgm.headers")
        if headers is None:
            headers = scope["cgm.headers"] = cls()
            for name, value in scope["headers"]:
                key = name.decode("latin-1").lower()
                value = value.decode("latin-1")
                # Repeated headers join with commas (RFC 9110), as Django does.
                headers[key] = f"{headers[key]},{value}" if key in headers else value
        return headers

    def get(self, name, default=None):
        return super().get(name.lower(), default)


def plain_request(scope, headers: Headers) -> bool:
    """True when Django's middleware would add nothing but security headers."""
    if "origin" in headers:
        return False  # browsers' cross-origin requests need CorsMiddleware
    domain, _ = split_domain_port(headers.get("host", ""))
    if not domain or not validate_host(domain, settings.ALLOWED_HOSTS):
        return False  # Django answers 400 and logs it
    return is_secure(scope, headers) or not settings.SECURE_SSL_REDIRECT


def is_secure(scope, headers: Headers) -> bool:
    proxy = settings.SECURE_PROXY_SSL_HEADER
    if proxy:
        name = proxy[0].removeprefix("HTTP_").replace("_", "-")
        return headers.get(name, "").split(",")[0].strip() == proxy[1]
    return scope.get("scheme") == "https"


def security_headers(secure: bool) -> list[tuple[bytes, bytes]]:
    """What Django's SecurityMiddleware adds to an answer, from the same settings."""
    headers = []
    if settings.SECURE_CONTENT_TYPE_NOSNIFF:
        headers.append((b"x-content-type-options", b"nosniff"))
    if settings.SECURE_REFERRER_POLICY:
        policy = settings.SECURE_REFERRER_POLICY
        policy = policy if isinstance(policy, str) else ",".join(policy)
        headers.append((b"referrer-policy", policy.encode()))
    if settings.SECURE_CROSS_ORIGIN_OPENER_POLICY:
        headers.append(
            (b"cross-origin-opener-policy", settings.SECURE_CROSS_ORIGIN_OPENER_POLICY.encode())
        )
    if secure and settings.SECURE_HSTS_SECONDS:
        hsts = f"max-age={settings.SECURE_HSTS_SECONDS}"
        if settings.SECURE_HSTS_INCLUDE_SUBDOMAINS:
            hsts += "; includeSubDomains"
        if settings.SECURE_HSTS_PRELOAD:
            hsts += "; preload"
        headers.append((b"strict-transport-security", hsts.encode()))
    return headers
