"""Where a dashboard listens: GET /api/sse/...

door.py (the ASGI door) -> view.py (who, which stations, resume from the cursor, then
live from push/local.py) -> keepalive.py (heartbeats); behind Pushpin, pushpin.py
answers with a hold instruction instead. channels.py is the per-station read policy.
Streams only read the log (notifications/log.py); they never write.
"""
