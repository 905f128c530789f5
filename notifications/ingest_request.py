"""What POST /api/event does with a parsed body, whichever door it came in by.

Two doors lead here: the DRF view (notifications/api.py; Django's full stack, used by
browsers, sessions and the WSGI test client) and the ASGI lane for API-key posts
(notifications/ingest_asgi.py). Both authenticate first, then hand over the body.
"""

from django.conf import settings
from rest_framework import status

from access.models import ApiKey
from access.policy import key_stations
from notifications.api_errors import ApiError
from notifications.representation import notification_data
from notifications.serializers import validate_events
from notifications.services import notification_ingest


def too_large(message: str) -> ApiError:
    return ApiError(status.HTTP_413_REQUEST_ENTITY_TOO_LARGE, "too_large", message)


def body_too_large() -> ApiError:
    return too_large(f"The body is larger than {settings.CGM_INGEST_MAX_BODY_BYTES} bytes.")


def ingest_posted(api_key: ApiKey, body, store=notification_ingest) -> tuple[int, dict | list]:
    """Validate, store and render one posted event or batch: (status, response data).
    Raises ApiError (403, 400, 413) with nothing stored. `store` is
    services.notification_ingest or the group committer's (group_commit.py)."""
    batch = isinstance(body, list)
    raw_events = body if batch else [body]
    if batch and not raw_events:
        raise ApiError(400, "invalid", "The batch is empty.", {"body": ["Empty array."]})
    if len(raw_events) > settings.CGM_INGEST_MAX_BATCH:
        raise too_large(f"At most {settings.CGM_INGEST_MAX_BATCH} events per batch.")

    # Before validation, so a key limited to some stations learns nothing about
    # whether other stations exist.
    allowed = key_stations(api_key, ApiKey.Scope.INGEST)
    forbidden = {
        (f"[{index}].stationId" if batch else "stationId"): [
            f"This key may not post for station {raw['stationId']!r}."
        ]
        for index, raw in enumerate(raw_events)
        if isinstance(raw, dict)
        and isinstance(raw.get("stationId"), str)
        and not allowed.allows(raw["stationId"])
    }
    if forbidden:
        raise ApiError(403, "forbidden", "Station outside this key; nothing was stored.", forbidden)

    events, errors = validate_events(raw_events, batch=batch)
    if errors:
        message = "The batch is invalid; nothing was stored." if batch else "The event is invalid."
        raise ApiError(400, "invalid", message, errors)

    stored = store(events=events)
    code = status.HTTP_201_CREATED if any(s.created for s in stored) else status.HTTP_200_OK
    data = [notification_data(s.notification) for s in stored]
    return code, (data if batch else data[0])
