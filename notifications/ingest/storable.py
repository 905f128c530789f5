"""Can the log keep this value exactly as sent? The fields beyond the modelled ones.

Some JSON parses into values that no store here can keep faithfully, or that break
every reader afterwards; each is a permanent client error (400 naming the field), never
a 500, and never a 503 that invites the sender to retry forever:

- a lone surrogate ("\\ud800"): SQLite stores it, and then every UTF-8 encoder fails on
  the row: the history API and each stream that reached it stopped for good;
- NUL ("\\u0000"): PostgreSQL's jsonb cannot keep it (so SQLite refuses it too: the
  same answer on every database);
- a number that is not finite (1e999 parses to infinity): not JSON once written back;
- nesting deeper than CGM_INGEST_MAX_DEPTH levels, and extra fields past
  CGM_INGEST_MAX_EXTRA_BYTES in all.

The modelled fields (id, stationId, message...) are strings checked by DRF's CharField,
which already refuses NUL and surrogates.
"""

import json
import math
import re

from django.conf import settings

_SURROGATE = re.compile("[\ud800-\udfff]")


def _string_problem(text: str) -> str | None:
    if text.isascii():
        return "NUL characters cannot be stored." if "\x00" in text else None
    if _SURROGATE.search(text):
        return "Lone surrogate characters (invalid UTF-16 escapes) cannot be stored."
    if "\x00" in text:
        return "NUL characters cannot be stored."
    return None


def value_problem(value) -> str | None:
    """Why `value` (one extra field, as parsed) cannot be stored, or None. Iterative:
    the depth is the thing being checked."""
    max_depth = settings.CGM_INGEST_MAX_DEPTH
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        kind = type(item)
        if kind is str:
            problem = _string_problem(item)
            if problem:
                return problem
        elif kind is float:
            if not math.isfinite(item):
                return "Numbers must be finite."
        elif kind is dict or kind is list:
            if depth > max_depth:
                return f"Nested deeper than {max_depth} levels."
            if kind is dict:
                for key, child in item.items():
                    problem = _string_problem(key)
                    if problem:
                        return f"A key: {problem}"
                    pending.append((child, depth + 1))
            else:
                pending.extend((child, depth + 1) for child in item)
    return None


def extra_problems(extra: dict) -> dict[str, list[str]]:
    """{field: [message]} for the extra fields that cannot be stored."""
    errors = {}
    for name, value in extra.items():
        # The common case decided at once: a plain ASCII string or a small number.
        if (type(value) is str and value.isascii() and "\x00" not in value) or type(value) in (
            int,
            bool,
        ):
            problem = None
        else:
            problem = value_problem(value)
        if problem is None:
            problem = _string_problem(name) and f"The field name: {_string_problem(name)}"
        if problem:
            # A name that is itself unencodable is named by its JSON escape ("\\ud800").
            errors[name.encode("utf-8", "backslashreplace").decode() or "body"] = [problem]
    if not errors and extra:
        size = len(json.dumps(extra, ensure_ascii=False).encode())
        limit = settings.CGM_INGEST_MAX_EXTRA_BYTES
        if size > limit:
            largest = max(extra, key=lambda name: len(json.dumps(extra[name], ensure_ascii=False)))
            errors[largest] = [f"Extra fields take {size} bytes as JSON; at most {limit} in all."]
    return errors
