"""The server: Daphne, with limits enforced before Twisted buffers a body or a reply.

    .venv/bin/python -m cgm.server [daphne's options] cgm.asgi:application

Every launcher of this project (make run, scripts/run_multi.py, the tests, the bench)
starts this instead of the `daphne` command. It is Daphne's own command line
(`CommandLineInterface`, whose `server_class` is its documented place for a different
server) with a server whose HTTP factory builds the two classes below:

- `BoundedRequest` (Daphne's `WebRequest`): Twisted reads a whole request body before
  Daphne calls the application, into a temporary file past 100 kB. Here a body is kept
  in memory and never past the limit (CGM_INGEST_MAX_BODY_BYTES): a body that streams
  past it is cut off there and handed on at once, one byte over, so the application
  answers 413 as for any over-size body; the rest is never read and the connection
  closes after the answer. Twisted's own parsing of form bodies into `request.args`
  (which Daphne never reads) is off, and so is Twisted's own access log line per request
  (Daphne's is the access log).
- `BoundedChannel` (Twisted's `HTTPChannel`):
  - a request that declares a body over the limit, or that carries no credentials at
    all (no `Authorization`, `X-Api-Key` or cookie: nothing here accepts a body
    without one), has its body dropped unread: the request goes on to the application
    as if it had none, which answers (401, 413: the ingest's one answer, headers and
    CORS included), and the connection closes after the answer;
  - a client that stops reading its stream has its connection aborted once
    CGM_SSE_MAX_BACKLOG_BYTES of reply wait behind Twisted's own send buffer, itself
    behind a kernel send buffer fixed at CGM_SOCKET_SEND_BUFFER_BYTES: memory per
    stream stays bounded, and the client resumes from its cursor when it reconnects;
  - and so that a client that does read is not taken for one that stopped, the
    server's application gets the channel's `drained` in its scope, as the ASGI
    extension SEND_BUFFER (`BoundedServer.create_application`): a stream's replay waits
    on it between pages (notifications/streams/view.py) instead of writing a long
    catch-up as fast as the database answers.

What this leans on beyond documented interfaces, all checked at import (a Daphne or
Twisted upgrade that moves them fails at start-up, not at run time), with both packages
pinned in requirements.txt: Daphne's `Server.run` assigns `self.http_factory` before it
listens (the property below hands it ours), and `HTTPChannel.allHeadersReceived` is
where the channel asks the request for its body (`gotLength(self.length)`), right before
it reads the body when `self.length` is not 0.
"""

import asyncio
import inspect
import logging
import socket
from contextlib import suppress
from io import BytesIO

from daphne.cli import CommandLineInterface
from daphne.http_protocol import HTTPFactory, WebRequest
from daphne.server import Server
from django.conf import settings
from twisted.web.http import HTTPChannel, Request

logger = logging.getLogger(__name__)

CREDENTIAL_HEADERS = (b"authorization", b"x-api-key", b"cookie")
# The ASGI scope's extension (scope["extensions"], a dict per extension as the ASGI
# spec has them) whose "drained" is the connection's BoundedChannel.drained.
SEND_BUFFER = "cgm.send_buffer"


def _check_assumptions() -> None:
    run = inspect.getsource(Server.run)
    headers = inspect.getsource(HTTPChannel.allHeadersReceived)
    if "self.http_factory = HTTPFactory(self)" not in run:
        raise ImportError("daphne.server.Server.run no longer builds self.http_factory")
    if "req.gotLength(self.length)" not in headers:
        raise ImportError("twisted HTTPChannel.allHeadersReceived changed its body hand-off")
    if "parsePOSTFormSubmission" not in inspect.signature(Request.__init__).parameters:
        raise ImportError("twisted Request no longer takes parsePOSTFormSubmission")


_check_assumptions()


def max_body_bytes() -> int:
    return max(settings.CGM_INGEST_MAX_BODY_BYTES, settings.DATA_UPLOAD_MAX_MEMORY_SIZE)


class BoundedRequest(WebRequest):
    cut_off = False
    received = 0

    def __init__(self, *args, **kwargs):
        # Twisted parses every POST body's Content-Type (through the email package, a
        # tenth of a worker's CPU per single-event ingest in py-spy) and then the body
        # of a form submission into `request.args`, which Daphne never reads: it hands
        # the raw body to the application, and Django parses forms itself. Twisted's
        # documented switch turns that off.
        super().__init__(*args, parsePOSTFormSubmission=False, **kwargs)

    def gotLength(self, length):
        # In memory, never a temporary file: no body here grows past max_body_bytes().
        self.content = BytesIO()

    def handleContentChunk(self, data):
        if self.cut_off:
            return  # past the limit: the rest is not kept
        limit = max_body_bytes()
        keep = limit + 1 - self.received  # one byte over tells the application
        self.received += len(data)
        super().handleContentChunk(data[:keep])
        if self.received > limit:
            self.cut_off = True
            logger.warning("body past %d bytes from %s: cut off", limit, self.getClientAddress())
            # The application answers now (the ingest door: 413), as for any request.
            self.channel.end_body_early()


class BoundedChannel(HTTPChannel):
    backlog = 0  # reply bytes written while the client's send buffer is full
    send_buffer_full = False

    def allHeadersReceived(self):
        request = self.requests[-1]
        drop_body = self.length != 0 and self._refuses_body(request)
        if drop_body:
            self.length = 0
        super().allHeadersReceived()
        if drop_body:
            self.persistent = False  # the unread body must not be taken for a request

    body_ended_early = False

    def connectionMade(self):
        super().connectionMade()
        # A fixed kernel send buffer: otherwise Linux grows it to several MB for a
        # client that stops reading before Twisted ever sees the backlog.
        with suppress(OSError, AttributeError):
            self.transport.getHandle().setsockopt(
                socket.SOL_SOCKET, socket.SO_SNDBUF, settings.CGM_SOCKET_SEND_BUFFER_BYTES
            )

    def end_body_early(self) -> None:
        """The request goes to the application with the body received so far; the
        rest is never read, and the connection closes after the answer."""
        self.body_ended_early = True
        super().allContentReceived()
        self.persistent = False

    def allContentReceived(self):
        if self.body_ended_early:
            return  # the decoder reached the end of a body already handed on
        super().allContentReceived()

    def _refuses_body(self, request) -> bool:
        headers = request.requestHeaders
        if not any(headers.hasHeader(name) for name in CREDENTIAL_HEADERS):
            return True
        return self.length is not None and self.length > max_body_bytes()

    # The transport calls these when its send buffer fills up and when it drains.
    def pauseProducing(self):
        self.send_buffer_full = True
        super().pauseProducing()

    def resumeProducing(self):
        self.send_buffer_full = False
        self.backlog = 0
        super().resumeProducing()
        self._wake_writers()

    connection_lost = False

    def connectionLost(self, reason):
        super().connectionLost(reason)
        self.connection_lost = True  # (Twisted leaves self.transport set)
        self._wake_writers()

    _drained: asyncio.Future | None = None

    def _wake_writers(self) -> None:
        drained, self._drained = self._drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)

    def drained(self) -> asyncio.Future | None:
        """None when the client has taken what was written so far (or is gone); else a
        future done once it has (the transport's resumeProducing) or the connection is
        lost. Shared by whoever asks while the buffer stays full; how long to wait is
        the caller's. (Twisted runs on the asyncio loop here, so its callbacks and the
        waiters share the loop's thread.)"""
        if not self.send_buffer_full or self.connection_lost:
            return None
        if self._drained is None:
            self._drained = asyncio.get_running_loop().create_future()
        return self._drained

    def write(self, data):
        if self.send_buffer_full:
            self.backlog += len(data)
            if self.backlog > settings.CGM_SSE_MAX_BACKLOG_BYTES:
                self._drop_slow_client()
                return
        super().write(data)

    def writeSequence(self, iovec):
        for data in iovec:
            self.write(data)

    def _drop_slow_client(self) -> None:
        if self.transport is None or getattr(self, "dropped", False):
            return
        self.dropped = True
        logger.warning(
            "client %s stopped reading: disconnected after %d bytes of backlog",
            self.transport.getPeer(),
            self.backlog,
        )
        self.transport.abortConnection()


class BoundedHTTPFactory(HTTPFactory):
    protocol = BoundedChannel

    def log(self, request):
        # Twisted's own access log: a line in the combined log format for each request,
        # written to Twisted's global log, which Daphne discards (below -v 2) or passes
        # on beside its own access log (--access-log, the one this project documents).
        # Formatting it took 3 % of a worker's CPU per single-event ingest (py-spy).
        # (At -v 2 and above that line was also where a request's User-Agent and
        # Referer appeared; Daphne's access log has neither.)
        return

    def buildProtocol(self, addr):
        channel = super().buildProtocol(addr)
        channel.requestFactory = BoundedRequest
        return channel


class BoundedServer(Server):
    def create_application(self, protocol, scope):
        channel = getattr(protocol, "channel", None)
        if isinstance(channel, BoundedChannel):
            scope["extensions"] = {
                **scope.get("extensions", {}),
                SEND_BUFFER: {"drained": channel.drained},
            }
        return super().create_application(protocol, scope)

    @property
    def http_factory(self):
        return self._http_factory

    @http_factory.setter
    def http_factory(self, factory):
        # Server.run builds Daphne's HTTPFactory and listens with what it assigned.
        self._http_factory = BoundedHTTPFactory(self) if type(factory) is HTTPFactory else factory
        logger.info(
            "limits on: bodies <= %d bytes, backlog <= %d bytes per connection",
            max_body_bytes(),
            settings.CGM_SSE_MAX_BACKLOG_BYTES,
        )


class CommandLine(CommandLineInterface):
    server_class = BoundedServer


if __name__ == "__main__":
    CommandLine.entrypoint()
