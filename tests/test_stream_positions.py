"""A direct stream reads its stations' positions when it opens, and listens only after
(notifications/streams/view.py, NotificationStream): an event committed in between must
still reach it.

The race is set up by hand: positions read at seq 5, then seq 6 committed and handed to
this process's channels before the stream listens. Without local_channels.newest() the
stream would wait for the next event of the station, however long that takes.
"""

import asyncio

import pytest

from access.policy import Principal
from notifications.log import log_positions
from notifications.models import LogEntry, Notification
from notifications.push.local import LiveEvent, local_channels
from notifications.streams.view import NotificationStream
from stations.models import Station

pytestmark = pytest.mark.django_db(transaction=True)  # the stream reads on its own threads


def _entry(station, seq):
    return LogEntry(station=station, seq=seq, kind="status", data=f'{{"n": {seq}}}')


async def _frames(stream, count, timeout=3.0):
    frames = stream.events()
    try:
        return [await asyncio.wait_for(anext(frames), timeout) for _ in range(count)]
    finally:
        await frames.aclose()


CASES = {
    # ...and is published to this process before the stream listens: its listener
    # never sees it; the stream must read it from the log.
    "published-before-listening": "ST901",
    # ...and is lost with a Redis outage (another process committed it); Redis comes
    # back and every stream is told to re-read the log before this one listens.
    "catch-up-before-listening": "ST903",
    # ...and is not published yet: the stream waits for the live event.
    "not-yet": "ST902",
}


@pytest.mark.parametrize("case", list(CASES))
def test_an_event_committed_between_the_positions_read_and_listening_is_sent(case):
    # A station code of its own per case: local_channels is the process's, and remembers.
    code = CASES[case]
    station = Station.objects.create(code=code, name="race")
    LogEntry.objects.bulk_create([_entry(station, seq) for seq in range(1, 6)])
    Station.objects.filter(pk=station.pk).update(log_seq=5)
    catch_ups = local_channels.catch_ups()
    positions = log_positions([code])  # the stream's open reads seq 5...
    stream = NotificationStream([code], {}, positions, catch_ups, Principal("key", 1))

    LogEntry.objects.create(station=station, seq=6, kind="status", data='{"n": 6}')
    Station.objects.filter(pk=station.pk).update(log_seq=6)  # ...then 6 commits
    if case != "not-yet":
        if case == "published-before-listening":
            local_channels.deliver([LiveEvent(code, "status", '{"n": 6}', 6)])
        else:
            local_channels.catch_up_all()
        opening, caught_up = asyncio.run(_frames(stream, 2))
        assert "event: stream-open" in opening and f"id: {code}:5" in opening
        assert caught_up == f'event: status\nid: {code}:6\ndata: {{"n": 6}}\n\n'
    else:
        # Not published yet: the stream sends its opening and waits for the live event
        # (a read of the log now would be wasted).
        async def opening_then_live():
            frames = stream.events()
            try:
                opening = await anext(frames)
                pending = asyncio.ensure_future(anext(frames))
                await asyncio.sleep(0.2)
                assert not pending.done()
                local_channels.deliver([LiveEvent(code, "status", '{"n": 6}', 6)])
                return opening, await asyncio.wait_for(pending, 3)
            finally:
                await frames.aclose()

        opening, live = asyncio.run(opening_then_live())
        assert f"id: {code}:5" in opening
        assert live == f'event: status\nid: {code}:6\ndata: {{"n": 6}}\n\n'


def test_the_first_replay_page_read_with_the_open_and_an_event_committed_before_listening_are_both_sent():  # noqa: E501
    # A resuming client (at seq 3) gets its first replay page read in the open's trip,
    # before the stream listens (NotificationStream.replay_first_page): 4 and 5. Then 6
    # commits and is handed out before the stream listens: it is read from the log too.
    code = "ST904"
    station = Station.objects.create(code=code, name="race")
    LogEntry.objects.bulk_create([_entry(station, seq) for seq in range(1, 6)])
    Station.objects.filter(pk=station.pk).update(log_seq=5)
    catch_ups = local_channels.catch_ups()
    positions = log_positions([code])
    stream = NotificationStream([code], {code: 3}, positions, catch_ups, Principal("key", 1))
    stream.replay_first_page()

    LogEntry.objects.create(station=station, seq=6, kind="status", data='{"n": 6}')
    Station.objects.filter(pk=station.pk).update(log_seq=6)
    local_channels.deliver([LiveEvent(code, "status", '{"n": 6}', 6)])
    opening, caught_up = asyncio.run(_frames(stream, 2))
    assert opening.index("event: stream-open") < opening.index(f"id: {code}:4")
    assert opening.endswith(
        f'event: status\nid: {code}:4\ndata: {{"n": 4}}\n\n'
        f'event: status\nid: {code}:5\ndata: {{"n": 5}}\n\n'
    )
    assert caught_up == f'event: status\nid: {code}:6\ndata: {{"n": 6}}\n\n'


def test_the_replay_reads_both_tables_of_the_log_in_one_statement(django_assert_num_queries):
    # The log is two tables numbered from one counter (notifications/log.py). Read by
    # one statement, the page is one snapshot: an operator's change (seq 3) and then an
    # event (seq 4) can never be seen without each other's predecessors, as they could
    # between two statements (where 4 without 3 looked like a hole at the station's
    # start). The page is cut at the limit across both tables.
    from notifications import log

    code = "ST905"
    station = Station.objects.create(code=code, name="one snapshot")
    LogEntry.objects.bulk_create([_entry(station, seq) for seq in (1, 3, 5)])
    for seq in (2, 4, 6):
        Notification.objects.create(
            station=station, seq=seq, message_id=f"one-{seq}", fault_type="F", action="A",
            payload={},
        )  # fmt: skip
    Station.objects.filter(pk=station.pk).update(log_seq=6)

    with django_assert_num_queries(1):
        items = log.log_entries_after({station.pk: (code, 1)}, 4)
    assert [(item.station_code, item.seq, item.kind) for item in items] == [
        (code, 2, "notification"),
        (code, 3, "status"),
        (code, 4, "notification"),
        (code, 5, "status"),
    ]
    assert [item.seq for item in log.log_entries_after({station.pk: (code, 5)}, 4)] == [6]
