"""What POST /api/event does with a parsed body (one event or a batch), once the view
(api.py) has authenticated the key: station scope, validation, storage, the answer."""

from django.conf import settings
from rest_framework import status

from access.models import ApiKey
from access.policy import key_stations
from notifications.errors import ApiError, too_large
from notifications.ingest.services import notification_ingest
from notifications.ingest.validation import validate_events
from notifications.wire import notification_data


def ingest_posted(api_key: ApiKey, body, store=notification_ingest) -> tuple[int, dict | list]:
    """Validate, store and render one posted event or batch: (status, response data).
    Raises ApiError (403, 400, 413) with nothing stored. `store` is the group
    committer's (group_commit.py); tests may pass services.notification_ingest."""
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
