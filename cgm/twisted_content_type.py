"""A faster Content-Type parse for Twisted's HTTP server (Daphne's), same answers.

Twisted reads every POST's Content-Type to decide whether to parse a form body (which
Daphne never uses), and does it by building an email.message.EmailMessage: about a
tenth of the server's CPU per single-event post in the ingest benchmark
(docs/PERFORMANCE.md). A well-formed value ("application/json; charset=utf-8") is
answered here directly; anything else goes to Twisted's own function, so the result is
always what Twisted would have computed (tests/test_twisted_content_type.py).
"""

import re

from twisted.web import http

_original = getattr(http, "_parseContentType", None)
# type "/" subtype, RFC 9110 token characters, optional parameters after ";", and no
# CR or LF anywhere (Twisted's parse refuses those; such values go to it).
_TOKEN = rb"[A-Za-z0-9!#$%&'*+.^_`|~-]+"
_SIMPLE = re.compile(rb"[ \t]*(" + _TOKEN + rb"/" + _TOKEN + rb")[ \t]*(;[^\r\n]*)?\Z")


def parse_content_type(line: bytes) -> bytes:
    match = _SIMPLE.match(line)
    if match is None:
        return _original(line)
    return match.group(1).lower()


def install() -> None:
    """Replace Twisted's function, if this Twisted has the one we know."""
    if _original is not None and http._parseContentType is _original:
        http._parseContentType = parse_content_type
