"""Ending open streams whose caller lost access, in every server process.

One watcher task per process polls the access revision (a one-row table) every
CGM_ACCESS_RECHECK_SECONDS. When it moves, the watcher re-reads the access of each
distinct caller with open streams (one query per caller, not per stream) and kicks
the streams that lost a station. Polling the database keeps this working across
worker processes and deployment sizes without a message bus.
"""

import asyncio
import itertools
import logging
from collections.abc import Callable

from django.conf import settings

from access.models import AccessRevision
from access.policy import Principal, readable_stations
from cgm.db_pool import run_db

logger = logging.getLogger(__name__)


class RevocationWatcher:
    def __init__(self):
        self.streams: dict[int, tuple[Principal, list[str], Callable[[list[str]], None]]] = {}
        self._ids = itertools.count()
        self._task: asyncio.Task | None = None

    def watch(self, principal: Principal, codes: list[str], kick: Callable[[list[str]], None]):
        token = next(self._ids)
        self.streams[token] = (principal, codes, kick)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())
        return token

    def unwatch(self, token: int) -> None:
        self.streams.pop(token, None)

    async def _run(self):
        # None: the first poll always re-checks, covering a change that landed between
        # a stream's own check and the watcher's start.
        seen = None
        while self.streams:
            await asyncio.sleep(settings.CGM_ACCESS_RECHECK_SECONDS)
            try:
                revision = await run_db(AccessRevision.current)
                if revision == seen:
                    continue
                principals = {principal for principal, _, _ in self.streams.values()}
                readable = await run_db(
                    lambda: {p: readable_stations(p) for p in principals}  # noqa: B023
                )
                seen = revision
            except Exception:
                # The database being away must not kill the watcher: try again next tick.
                logger.exception("access re-check failed; retrying")
                continue
            for principal, codes, kick in list(self.streams.values()):
                stations = readable.get(principal)
                if stations is None:
                    continue  # a stream that opened during this pass: next pass
                lost = stations.forbidden(codes)
                if lost:
                    kick(lost)


watcher = RevocationWatcher()
