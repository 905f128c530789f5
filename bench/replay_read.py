"""What one page of the station log costs to read (notifications/log.py
log_entries_after): the read every resuming stream, every catch-up page and the Pushpin
relay make.

    .venv/bin/python bench/replay_read.py

On a database of its own (created on the local PostgreSQL, dropped at the end): one
station with 40,000 entries, alternately a notification and a status change. Reads
pages 1, 10 and 100 entries behind its end in a loop, three batches each, and prints per
read the wall time, this process's CPU and the PostgreSQL backend's CPU (from /proc).
Run it in two checkouts in turn to compare them.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.services import create_pg_database, drop_pg_database, pg_url  # noqa: E402

ENTRIES = 40_000
PAGE = 100
CASES = (("1 behind", 1, 3000), ("10 behind", 10, 3000), ("100 behind", 100, 1000))


def main() -> None:
    name = create_pg_database()
    try:
        os.environ["DATABASE_URL"] = pg_url(name)
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v0"],
            cwd=ROOT, check=True, env=os.environ,
        )  # fmt: skip
        measure()
    finally:
        drop_pg_database(name)


def measure() -> None:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cgm.settings")
    django.setup()
    from django.db import connection

    from notifications import log
    from notifications.models import LogEntry, Notification
    from stations.models import Station

    station = Station.objects.create(code="REPLAY", name="replay read")
    Notification.objects.bulk_create(
        Notification(station=station, seq=seq, message_id=f"replay-{seq}", fault_type="F",
                     action="A", payload={})
        for seq in range(2, ENTRIES + 1, 2)
    )  # fmt: skip
    LogEntry.objects.bulk_create(
        LogEntry(station=station, seq=seq, kind="status", data="{}")
        for seq in range(1, ENTRIES + 1, 2)
    )
    Station.objects.filter(pk=station.pk).update(log_seq=ENTRIES)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
        cursor.execute("SELECT pg_backend_pid()")
        backend = cursor.fetchone()[0]
    for label, behind, reads in CASES:
        after = {station.pk: (station.code, ENTRIES - behind)}
        assert len(log.log_entries_after(after, PAGE)) == min(behind, PAGE)
        batches = []
        for _ in range(3):
            wall, cpu, db = time.perf_counter(), time.thread_time(), _cpu_seconds(backend)
            for _ in range(reads):
                log.log_entries_after(after, PAGE)
            batches.append(
                f"{(time.perf_counter() - wall) / reads * 1e6:.0f} / "
                f"{(time.thread_time() - cpu) / reads * 1e6:.0f} / "
                f"{(_cpu_seconds(backend) - db) / reads * 1e6:.0f}"
            )
        print(f"{label}: wall / Python CPU / PostgreSQL CPU per read (µs): {', '.join(batches)}")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


if __name__ == "__main__":
    main()
