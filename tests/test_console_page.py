"""The console page as served: its texts in one place (notifications/console_strings.py),
rendered into the page as JSON, and every text the scripts ask for defined there."""

import json
import re
from html.parser import HTMLParser

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command

from faults.models import Severity
from notifications.console_strings import CONSOLE_STRINGS
from stations.models import STATUSES
from tests.server import ROOT

SCRIPTS = sorted((ROOT / "static" / "console").glob("*.js"))


class _Page(HTMLParser):
    """The console-strings JSON and the scripts, in page order."""

    def __init__(self):
        super().__init__()
        self.scripts, self.strings, self._in_strings = [], None, False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "script" and attrs.get("src"):
            self.scripts.append(attrs["src"])
        self._in_strings = tag == "script" and attrs.get("id") == "console-strings"

    def handle_data(self, data):
        if self._in_strings:
            self.strings = json.loads(data)
            self._in_strings = False


@pytest.mark.django_db
def test_it_renders_every_console_string_into_the_page_and_loads_the_scripts_in_order(client):
    call_command("demo_data", stations=2, stdout=open("/dev/null", "w"))  # noqa: SIM115
    client.force_login(User.objects.create_superuser("op", password="pw"))

    response = client.get("/?station=ST001")

    assert response.status_code == 200
    page = _Page()
    page.feed(response.content.decode())
    assert page.strings == {key: str(text) for key, text in CONSOLE_STRINGS.items()}
    assert [src.rsplit("/", 1)[-1] for src in page.scripts] == [
        "strings.js",
        "stream.js",
        "board.js",
        "faults.js",
        "feed.js",
        "alerts.js",
        "console.js",
    ]
    assert {path.name for path in SCRIPTS} == {src.rsplit("/", 1)[-1] for src in page.scripts}


def test_every_text_the_scripts_ask_for_is_defined_in_one_place():
    asked, plurals = set(), set()
    for path in SCRIPTS:
        source = path.read_text()
        asked |= set(re.findall(r"\bt\('([A-Za-z_]+)'", source))
        plurals |= set(re.findall(r"\bplural\('([A-Za-z_]+)'", source))
    # Keys built at run time: a prefix and a value from the server or the page.
    prefixes = {key for key in asked if key.endswith("_")}
    assert prefixes == {"status_", "severity_", "action_"}, prefixes
    built = (
        {f"status_{s}" for s in STATUSES}
        | {f"severity_{s}" for s in Severity.values}
        | {f"action_{a}" for a in ("acknowledge", "unacknowledge", "note", "resolve")}
    )
    forms = {f"{p}_{form}" for p in plurals for form in ("one", "other")}
    assert len(asked) > 40, asked  # the scan works
    needed = (asked - prefixes) | built | forms
    missing = sorted(key for key in needed if key not in CONSOLE_STRINGS)
    assert missing == []
    # Nothing puts markup together from data: text nodes only.
    markup = re.compile(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write")
    for path in SCRIPTS:
        assert not markup.search(path.read_text()), path
