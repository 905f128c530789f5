"""cgm/twisted_content_type.py answers exactly as Twisted's own Content-Type parse."""

import pytest

from cgm import twisted_content_type

VALUES = [
    b"application/json",
    b"Application/JSON; charset=UTF-8",
    b"  text/plain ;format=flowed",
    b"application/x-www-form-urlencoded",
    b"multipart/form-data; boundary=----x",
    b'multipart/form-data; boundary="a;b"',
    b"application/vnd.api+json",
    b"json",
    b"",
    b"text/",
    b"/json",
    b"a/b/c",
    b"text/plain\r\nX-Injected: 1",
    b"text/plain; a=1\r\nX-Injected: 1",
    b"text/plain; a=1\n",
    b"text/plain;",
    b"text/plain ; ; ;",
    b"application/json; =broken",
    b"application/json; charset",
    b'application/json; a="unterminated',
    b"application/json; x=\xe9",
    b"application/json\t;\tcharset=utf-8",
    "t\xe9xt/plain".encode("latin-1"),
]


def outcome(parse, value):
    try:
        return parse(value)
    except Exception as exc:  # Twisted's parse refuses some values; so must ours
        return type(exc)


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_the_fast_parse_answers_as_twisted_does(value):
    ours = outcome(twisted_content_type.parse_content_type, value)
    assert ours == outcome(twisted_content_type._original, value)
