"""Stream cursors: "ST001:42,ST002:7", one log position per station.

The same format django-eventstream uses for its compound event ids, so a cursor read
from a stream works as Last-Event-ID in every deployment size (Pushpin included).
"""

from urllib.parse import quote, unquote


class CursorError(ValueError):
    pass


def format_cursor(positions: dict[str, int]) -> str:
    return ",".join(f"{quote(code)}:{seq}" for code, seq in positions.items())


def parse_cursor(text: str) -> dict[str, int]:
    positions: dict[str, int] = {}
    for part in text.split(","):
        code, sep, seq = part.strip().rpartition(":")
        if not sep or not code:
            raise CursorError(f"not a cursor part: {part!r}")
        try:
            value = int(seq)
        except ValueError:
            raise CursorError(f"not a sequence number: {seq!r}") from None
        if value < 0:
            raise CursorError(f"negative sequence number: {value}")
        positions[unquote(code)] = value
    return positions


def cursor_from_request(request) -> str | None:
    """Last-Event-ID header, else the last non-empty ?lastEventId= (EventSource polyfills)."""
    header = request.headers.get("Last-Event-ID", "").strip()
    if header:
        return header
    for value in reversed(request.GET.getlist("lastEventId")):
        if value.strip():
            return value.strip()
    return None
