"""One JSON error shape for every 4xx of the API.

    {"error": "invalid", "message": "...", "fields": {"stationId": ["..."]}}

`fields` names each offending field ("[3].stationId" inside a batch).
"""

import logging

from django.db import DatabaseError
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler


class ApiError(exceptions.APIException):
    def __init__(self, status_code: int, error: str, message: str, fields: dict | None = None):
        self.status_code = status_code
        self.error = error
        self.message = message
        self.fields = fields or {}
        super().__init__(message)


def error_body(error: str, message: str, fields: dict | None = None) -> dict:
    body = {"error": error, "message": message}
    if fields:
        body["fields"] = fields
    return body


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

logger = logging.getLogger(__name__)


def unavailable(exc: DatabaseError) -> ApiError:
    logger.error("database error on the API: %r", exc)
    return ApiError(
        503,
        "unavailable",
        "The database did not answer; the event may not be stored. Retry with the same id: "
        "a repeated id is stored once.",
    )


def api_exception_handler(exc, context):
    if isinstance(exc, DatabaseError):
        exc = unavailable(exc)
    if isinstance(exc, ApiError):
        headers = {"Retry-After": "1"} if exc.status_code == 503 else None
        return Response(
            error_body(exc.error, exc.message, exc.fields), status=exc.status_code, headers=headers
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
