"""Where an event enters: POST /api/event.

door.py (the ASGI door, body limit) -> api.py (the DRF view: key, rate, parse) ->
request.py (station scope, batch) -> validation.py (fields, equipment) ->
group_commit.py (one writer per process) -> services.py (the only code that writes
notifications; publishes only after commit).
"""
