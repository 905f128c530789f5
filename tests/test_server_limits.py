"""The project's server (cgm/server.py) really is in use, with its hooks in place.

If a Daphne or Twisted upgrade moved what the hooks rely on, cgm.server fails to import
(its own check); these tests fail too, and so does every end-to-end test, whose servers
start with `python -m cgm.server`.
"""

import pytest
from daphne.http_protocol import HTTPFactory, WebRequest
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from cgm import server as cgm_server


def make_server():
    return cgm_server.BoundedServer(application=None, endpoints=["tcp:port=0"])


def test_the_server_listens_with_the_bounded_factory_whatever_daphne_builds():
    server = make_server()
    server.http_factory = HTTPFactory(server)  # what Daphne's Server.run assigns
    assert type(server.http_factory) is cgm_server.BoundedHTTPFactory


def test_its_connections_are_bounded_channels_making_bounded_requests():
    server = make_server()
    server.http_factory = HTTPFactory(server)
    channel = server.http_factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1234))
    assert isinstance(channel, cgm_server.BoundedChannel)
    assert channel.requestFactory is cgm_server.BoundedRequest


def test_the_command_line_builds_the_bounded_server():
    assert cgm_server.CommandLine.server_class is cgm_server.BoundedServer


def test_the_assumptions_about_daphne_and_twisted_still_hold():
    cgm_server._check_assumptions()  # raises ImportError when they moved


@pytest.mark.e2e
def test_end_to_end_servers_run_the_bounded_server(server):
    assert "limits on: bodies <= 1048576 bytes" in server.log()


def _received_form_post(request_class) -> tuple[dict, bytes]:
    """What Twisted leaves in `request.args` for a form POST that `request_class` (a
    Daphne request) received, and the body as the application will read it."""

    class Held(request_class):
        def process(self):
            pass  # stop before Daphne hands the request to the application

    server = make_server()
    server.http_factory = HTTPFactory(server)
    server.connections = {}  # as Daphne's Server.run sets them up before it listens
    channel = server.http_factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1234))
    channel.transport = StringTransport()
    request = Held(channel)
    request.requestHeaders.setRawHeaders(b"content-type", [b"application/x-www-form-urlencoded"])
    request.gotLength(len(FORM))
    request.handleContentChunk(FORM)
    request.requestReceived(b"POST", b"/accounts/login/", b"HTTP/1.1")
    request.content.seek(0)  # as Daphne's process() does before it reads the body
    return request.args, request.content.read()


FORM = b"username=alice&password=pw"


def test_twisted_leaves_post_bodies_to_the_application():
    # Daphne's own request class parses the form (through the email package, for every
    # POST with a Content-Type) into `args`, which nothing reads; the bounded one does
    # not. The body still reaches Django whole: the e2e logins post this very form.
    assert _received_form_post(WebRequest) == (
        {b"username": [b"alice"], b"password": [b"pw"]},
        FORM,
    )
    assert _received_form_post(cgm_server.BoundedRequest) == ({}, FORM)
