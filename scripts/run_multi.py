"""Several Daphne workers on one listening socket: the "one machine, several cores" size.

    .venv/bin/python scripts/run_multi.py --port 8000 --workers 2

Each worker gets its own listening socket on the same port (SO_REUSEPORT), opened here
and inherited (daphne --fd): the kernel spreads new connections evenly over the
sockets, so no load balancer process is in the path. (One shared socket let whichever
worker woke first take every connection: under load one core did all the work.) A
restarted worker inherits its predecessor's socket, so nothing queued on it is lost. Needs
REDIS_URL (fan-out between the workers) and normally DATABASE_URL (PostgreSQL).
A worker that dies is started again; Ctrl-C or SIGTERM stops them all.
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

    workers = [spawn(index) for index in range(args.workers)]
    print(
        f"run_multi: {args.workers} Daphne workers on http://{args.host}:{args.port}/ "
        f"(pids {' '.join(str(w.pid) for w in workers)})",
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
    for worker in workers:
        worker.terminate()
    for worker in workers:
        try:
            worker.wait(10)
        except subprocess.TimeoutExpired:
            worker.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
