"""The benchmark's yardstick: an ASGI app that answers a POST and does nothing else.

`bench/run.py calibrate` serves it with Daphne exactly as the ingest scenario serves
the project (two workers on one port, scripts/run_multi.py's SO_REUSEPORT sockets) and
drives it with the same 16 posters. What it reaches is the most any Daphne app can
answer on the machine at hand: the ceiling the ingest figures are to be read against,
since machines differ (docs/PERFORMANCE.md).
"""

import json


async def application(scope, receive, send):
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    # Parse and answer JSON, as the ingest does at the least.
    content = json.dumps({"received": len(json.loads(body or b"{}"))}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(content))]
    await send({"type": "http.response.start", "status": 201, "headers": headers})
    await send({"type": "http.response.body", "body": content})
