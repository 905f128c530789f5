"""Publishing to every Pushpin node GRIP_URL names (notifications/grip.py).

The two "nodes" here are small local HTTP servers standing in for Pushpin's publish
endpoint (the real Pushpin runs in tests/test_e2e_pushpin.py)."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from access.policy import Principal
from notifications.push import pushpin as grip
from notifications.wire import encode_data
from tests.server import free_port


class PublishEndpoint:
    def __init__(self):
        self.bodies: list[dict] = []
        self.sizes: list[int] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802 (http.server's naming)
                length = int(self.headers["Content-Length"])
                endpoint.sizes.append(length)
                endpoint.bodies.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True  # keep-alive handlers must not block shutdown
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def nodes(settings):
    started = [PublishEndpoint(), PublishEndpoint()]
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    settings.GRIP_URLS = [started[0].url, down, started[1].url]
    grip._connections.by_url = {}
    yield started
    for node in started:
        node.stop()
    grip._connections.by_url = {}


def test_every_node_gets_every_publish_even_when_one_is_down(nodes):
    grip.publish_to_pushpin([("ST001", "notification", '{"seq": 7}', 7)])
    grip.publish_to_pushpin([("ST001", "notification", '{"seq": 8}', 8)])

    for node in nodes:
        items = [body["items"][0] for body in node.bodies]
        assert [(i["channel"], i["id"], i["prev-id"]) for i in items] == [
            ("events-ST001", "7", "6"),
            ("events-ST001", "8", "7"),
        ]


def test_closing_a_callers_streams_reaches_every_node(nodes):
    grip.close_streams_of({Principal("key", 42)})
    for node in nodes:
        assert node.bodies == [
            {
                "items": [
                    {
                        "channel": "principal-key-42",
                        "formats": {"http-stream": {"action": "close"}},
                    }
                ]
            }
        ]


def test_items_are_cut_to_the_limit_in_order_and_an_oversized_one_goes_alone():
    from notifications.push.size_limit import joined_under

    items = ["[1]", "[22]", "x" * 30, "[3]", "[4]"]
    chunks = joined_under(items, 12, "[", "]", ",")
    assert chunks == ["[[1],[22]]", "[" + "x" * 30 + "]", "[[3],[4]]"]
    assert joined_under([], 12, "[", "]", ",") == []
    # Each chunk is a JSON array of its items, at most the limit unless alone.
    assert [json.loads(c) for c in chunks if "x" not in c] == [[[1], [22]], [[3], [4]]]
    assert all(len(c) <= 12 for c in chunks if "x" not in c)
    assert joined_under(["[1]", "[2]"], 9, "[", "]", ",") == ["[[1],[2]]"]  # exactly 9


def test_a_publish_larger_than_pushpin_takes_goes_as_several_in_order(nodes, settings):
    # A publisher that fell behind sends everything queued at once; Pushpin refuses a
    # body over its push_in_http_max_body_size whole.
    settings.CGM_PUSHPIN_PUBLISH_MAX_BYTES = 2_000
    data = json.dumps({"message": "x" * 200})
    grip.publish_to_pushpin([("ST001", "notification", data, seq) for seq in range(1, 41)])

    for node in nodes:
        assert len(node.bodies) > 1
        assert max(node.sizes) <= 2_000
        # Each body is byte for byte what json.dumps makes of its items.
        assert node.sizes == [len(json.dumps(body)) for body in node.bodies]
        items = [item for body in node.bodies for item in body["items"]]
        assert [(i["id"], i["prev-id"]) for i in items] == [
            (str(seq), str(seq - 1)) for seq in range(1, 41)
        ]


def test_a_published_frame_escapes_percent_for_pushpins_build_id_filter(nodes):
    # Pushpin's build-id filter puts the stream's cursor where "%I" stands and reads
    # any other "%" as a marker: a literal one goes as "%%". These are the bytes
    # django-eventstream's sse_encode_event(escape=True) gives (this project's one frame
    # encoder replaced it on the relay).
    # As the log holds it: wire.encode_data, non-ASCII characters as they are.
    data = encode_data({"message": "100% load, %I and %s stay text", "note": "電樁\u2028"})
    grip.publish_to_pushpin([("ST001", "fault", data, 3)])

    for node in nodes:
        (item,) = node.bodies[0]["items"]
        content = item["formats"]["http-stream"]["content"]
        assert content == ("event: fault\nid: %I\ndata: " + data.replace("%", "%%") + "\n\n")
        assert item["formats"]["http-stream"]["content-filters"] == ["build-id"]
