"""The one JSON error shape, for every door of the API (ingest, streams, history).

    {"error": "invalid", "message": "...", "fields": {"stationId": ["..."]}}

`fields` names each offending field ("[3].stationId" inside a batch). DRF views get it
through `api_exception_handler` (settings.REST_FRAMEWORK); plain Django views and the
ASGI doors through `error_response`. Nothing else builds an error body.
"""

import logging

from django.core.exceptions import DisallowedHost
from django.db import DatabaseError
from django.http import JsonResponse
from django.views import defaults
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler

from cgm import db_health

logger = logging.getLogger(__name__)

# What a 401 says about how to authenticate (RFC 6750): every 401 carries it.
WWW_AUTHENTICATE = 'Bearer realm="cgm"'


class ApiError(exceptions.APIException):
    def __init__(
        self,
        status_code: int,
        error: str,
        message: str,
        fields: dict | None = None,
        headers: dict | None = None,
    ):
        self.status_code = status_code
        self.error = error
        self.message = message
        self.fields = fields or {}
        self.headers = dict(headers or {})
        if status_code == 401:
            self.headers.setdefault("WWW-Authenticate", WWW_AUTHENTICATE)
        if status_code == 503:
            # Documented: a 503 is transient, retry after a second with the same id.
            self.headers.setdefault("Retry-After", "1")
        super().__init__(message)


def error_body(error: str, message: str, fields: dict | None = None) -> dict:
    body = {"error": error, "message": message}
    if fields:
        body["fields"] = fields
    return body


def error_response(exc: ApiError) -> JsonResponse:
    """The error as a plain Django response (non-DRF views and the ASGI doors)."""
    response = JsonResponse(
        error_body(exc.error, exc.message, exc.fields),
        status=exc.status_code,
        # Byte for byte as DRF's JSONRenderer writes the same body.
        json_dumps_params={"separators": (",", ":"), "ensure_ascii": False},
    )
    for name, value in exc.headers.items():
        response[name] = value
    return response


def too_large(message: str) -> ApiError:
    return ApiError(status.HTTP_413_REQUEST_ENTITY_TOO_LARGE, "too_large", message)


def unavailable(exc: DatabaseError, *, posting_events: bool = True) -> ApiError:
    logger.error("database error on the API: %r", exc)
    db_health.failed(exc)
    if not posting_events:
        return ApiError(503, "unavailable", "The database did not answer; retry shortly.")
    return ApiError(
        503,
        "unavailable",
        "The database did not answer; the event may not be stored. Retry with the same id: "
        "a repeated id is stored once.",
    )


_CODES = {
    status.HTTP_400_BAD_REQUEST: "invalid",
    status.HTTP_401_UNAUTHORIZED: "unauthenticated",
    status.HTTP_403_FORBIDDEN: "forbidden",
    status.HTTP_404_NOT_FOUND: "not_found",
    status.HTTP_405_METHOD_NOT_ALLOWED: "method_not_allowed",
    status.HTTP_406_NOT_ACCEPTABLE: "not_acceptable",
    status.HTTP_413_REQUEST_ENTITY_TOO_LARGE: "too_large",
    status.HTTP_415_UNSUPPORTED_MEDIA_TYPE: "unsupported_media_type",
    status.HTTP_429_TOO_MANY_REQUESTS: "throttled",
}


def api_exception_handler(exc, context):
    """DRF's exception handler (settings.REST_FRAMEWORK): every DRF error in the one shape."""
    if isinstance(exc, DatabaseError):
        request = context.get("request")
        posting = request is not None and request.path.rstrip("/").endswith("/api/event")
        exc = unavailable(exc, posting_events=posting)
    if isinstance(exc, ApiError):
        return Response(
            error_body(exc.error, exc.message, exc.fields),
            status=exc.status_code,
            headers=exc.headers or None,
        )
    if isinstance(exc, exceptions.ParseError):
        return Response(
            error_body("invalid_json", "The body is not valid JSON.", {"body": [str(exc.detail)]}),
            status=status.HTTP_400_BAD_REQUEST,
        )
    response = exception_handler(exc, context)
    if response is None:
        return None
    detail = response.data.get("detail") if isinstance(response.data, dict) else None
    fields = None if detail is not None else response.data
    response.data = error_body(
        _CODES.get(response.status_code, "error"), str(detail or "Invalid request."), fields
    )
    return response


# Django's error views (cgm/urls.py): under /api/ every error is in the one shape too.
def _under_api(request) -> bool:
    return request.path.startswith("/api/")


@csrf_exempt  # also the catch-all under /api/: a POST there is a 404, not a CSRF page
def api_not_found(request, exception=None):
    if not _under_api(request):
        return defaults.page_not_found(request, exception)
    return error_response(ApiError(404, "not_found", f"No API endpoint at {request.path}."))


def bad_request(request, exception=None):
    if not _under_api(request):
        return defaults.bad_request(request, exception)
    if isinstance(exception, DisallowedHost):
        return error_response(BAD_HOST)
    return error_response(ApiError(400, "invalid", "Bad request."))


BAD_HOST = ApiError(400, "bad_host", "This Host is not served here.")


def server_error(request):
    if not _under_api(request):
        return defaults.server_error(request)
    return error_response(ApiError(500, "internal", "The server failed on this request."))
