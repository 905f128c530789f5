"""The notification log and an event's path through it, one folder per stage:

    ingest/    where an event enters (POST /api/event) and is stored
    push/      where a stored event goes out, only after commit
    streams/   where a dashboard listens (GET /api/sse/...)
    history/   reading back (GET /api/notifications) and pruning
    admin/     the history in the Django admin

Shared by all of them: models.py (the log), log.py (reads of it), wire.py (the JSON,
SSE frames and cursors clients see), errors.py (the one JSON error shape).
docs/EVENT_FLOW.md walks one event through these files.
"""
