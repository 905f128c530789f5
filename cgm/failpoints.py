"""Fault injection for the fault tests: a named point raises once, on its Nth pass.

    CGM_FAILPOINTS="stream.catch_up=3,stream.live=200"

makes the 3rd catch-up read and the 200th live delivery of this process raise
`InjectedFaultError`, once each. The fault suite (tests/test_faults.py) sets it on real
server processes to prove that a failure at each stage of a stream ends only that
stream, whose client resumes from its cursor. Unset (production), `failpoint()` is one
dictionary lookup on an empty dict.
"""

import os
import threading


class InjectedFaultError(RuntimeError):
    pass


def _parse(text: str) -> dict[str, int]:
    points = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, count = part.partition("=")
        points[name.strip()] = int(count or 1)
    return points


_remaining = _parse(os.environ.get("CGM_FAILPOINTS", ""))
_lock = threading.Lock()


def failpoint(name: str) -> None:
    if not _remaining:
        return
    with _lock:
        left = _remaining.get(name)
        if left is None:
            return
        if left > 1:
            _remaining[name] = left - 1
            return
        del _remaining[name]
    raise InjectedFaultError(f"failpoint {name}")
