"""Several Daphne workers on one listening socket: the "one machine, several cores" size.

    .venv/bin/python scripts/run_multi.py --port 8000 --workers 2

The socket is opened here and inherited by every worker (daphne --fd), so the kernel
spreads connections over them: no load balancer process in the path. Needs
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

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((args.host, args.port))
    listener.listen(4096)
    listener.set_inheritable(True)
    fd = listener.fileno()

    def spawn() -> subprocess.Popen:
        return subprocess.Popen(
            [str(BIN / "daphne"), "--fd", str(fd), *args.daphne_args, "cgm.asgi:application"],
            pass_fds=[fd],
        )

    workers = [spawn() for _ in range(args.workers)]
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
                workers[index] = spawn()
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
