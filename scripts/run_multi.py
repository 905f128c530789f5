"""Several Daphne workers on one listening socket: the "one machine, several cores" size.

    .venv/bin/python scripts/run_multi.py --port 8000 --workers 2

Each worker gets its own listening socket on the same port (SO_REUSEPORT), opened here
and inherited (daphne --fd): the kernel spreads new connections evenly over the
sockets, so no load balancer process is in the path. (One shared socket let whichever
worker woke first take every connection: under load one core did all the work.) A
restarted worker inherits its predecessor's socket, so nothing queued on it is lost. Needs
REDIS_URL (fan-out between the workers) and normally DATABASE_URL (PostgreSQL).
Behind Pushpin (GRIP_URL set, PostgreSQL) it also runs the Pushpin relay, `manage.py
pushpin_relay`, a process of its own (notifications/push/pushpin_relay.py says why).
A worker or relay that dies is started again; Ctrl-C or SIGTERM stops them all.
"""

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent


def _postgresql(url: str | None) -> bool:
    return bool(url) and url.split(":", 1)[0] in ("postgres", "postgresql", "pgsql")


def listening_socket(host: str, port: int) -> socket.socket:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    listener.bind((host, port))
    listener.listen(4096)
    listener.set_inheritable(True)
    return listener


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("daphne_args", nargs="*", help="passed on to daphne (after --)")
    args = parser.parse_args()

    if not os.environ.get("REDIS_URL"):
        print("run_multi: REDIS_URL is required (fan-out between workers)", file=sys.stderr)
        return 2

    listeners = [listening_socket(args.host, args.port) for _ in range(args.workers)]

    def spawn(index: int) -> subprocess.Popen:
        fd = listeners[index].fileno()
        return subprocess.Popen(
            [sys.executable, "-m", "cgm.server", "--fd", str(fd), *args.daphne_args]
            + ["cgm.asgi:application"],
            pass_fds=[fd],
        )

    def spawn_relay() -> subprocess.Popen | None:
        if not (os.environ.get("GRIP_URL") and _postgresql(os.environ.get("DATABASE_URL"))):
            return None
        return subprocess.Popen([sys.executable, "manage.py", "pushpin_relay"], cwd=ROOT)

    # The relay first: the workers' standbys then find its role taken.
    relay = spawn_relay()
    workers = [spawn(index) for index in range(args.workers)]
    processes = workers + ([relay] if relay else [])
    print(
        f"run_multi: {args.workers} Daphne workers on http://{args.host}:{args.port}/"
        f"{' and the Pushpin relay' if relay else ''} "
        f"(pids {' '.join(str(p.pid) for p in processes)})",
        flush=True,
    )

    stopping = False

    def stop(signum, frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while not stopping:
        time.sleep(0.5)
        for index, worker in enumerate(workers):
            if worker.poll() is not None and not stopping:
                print(f"run_multi: worker {worker.pid} exited ({worker.returncode}); restarting")
                workers[index] = spawn(index)
        if relay is not None and relay.poll() is not None and not stopping:
            print(f"run_multi: relay {relay.pid} exited ({relay.returncode}); restarting")
            relay = spawn_relay()
    for worker in workers + ([relay] if relay else []):
        worker.terminate()
    for worker in workers + ([relay] if relay else []):
        try:
            worker.wait(10)
        except subprocess.TimeoutExpired:
            worker.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
