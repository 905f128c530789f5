"""Start Pushpin in front of Django: the "beyond one machine" size, on one host.

    .venv/bin/python scripts/run_pushpin.py --origin 127.0.0.1:8001 --port 7999

Listens on 127.0.0.1 only, clients and publishers alike; a deployment names the
interfaces it wants (`--listen-address 0.0.0.0 --publish-address 10.0.0.5`).

Renders deploy/pushpin/*.template into var/pushpin-<port>/ and runs Pushpin there
(in the foreground; Ctrl-C stops it). When Pushpin exits on its own, it is started
again, as Debian's pushpin.service does (Restart=always): the streams it held end, and
their clients resume from their cursors (Last-Event-ID). Django must run with
GRIP_URL=http://127.0.0.1:<5561 + offset>?iss=pushpin&key=<same key>, which this
script prints. Installs Debian's pushpin and zurl first when they are missing.
"""

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "deploy" / "pushpin"


def render(
    rundir: Path,
    *,
    port: int,
    offset: int,
    origins: list[str],
    key: str,
    log_level: int = 2,
    listen_address: str = "127.0.0.1",
    publish_address: str = "127.0.0.1",
) -> Path:
    (rundir / "log").mkdir(parents=True, exist_ok=True)
    values = {
        "RUNDIR": str(rundir),
        "PORT_OFFSET": str(offset),
        "HTTP_PORT": str(port),
        "LISTEN_ADDRESS": listen_address,
        "PUBLISH_ADDRESS": publish_address,
        "GRIP_KEY": key,
        "ORIGINS": ",".join(origins),
        "LOG_LEVEL": str(log_level),
    }
    for name in ("pushpin.conf", "routes"):
        text = (TEMPLATES / f"{name}.template").read_text()
        for placeholder, value in values.items():
            text = text.replace("{{" + placeholder + "}}", value)
        (rundir / name).write_text(text)
    return rundir / "pushpin.conf"


def grip_url(offset: int, key: str, address: str = "127.0.0.1") -> str:
    return f"http://{address}:{5561 + offset}?iss=pushpin&key={key}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--origin",
        action="append",
        required=True,
        help="host:port of Django. Repeated: a fallback, not a balance (Pushpin sends every "
        "request to the first that answers); spread load with workers on one port "
        "(scripts/run_multi.py) or a load balancer as the one origin",
    )
    parser.add_argument("--port", type=int, default=7999, help="client-facing HTTP port")
    parser.add_argument("--port-offset", type=int, default=0, help="shift Pushpin's own ports")
    parser.add_argument("--key", default=os.environ.get("CGM_GRIP_KEY"), help="signing key")
    parser.add_argument("--log-level", type=int, default=2, help="3 = debug (tests read it)")
    parser.add_argument(
        "--listen-address", default="127.0.0.1", help="client interface (0.0.0.0: all)"
    )
    parser.add_argument(
        "--publish-address", default="127.0.0.1", help="interface of the publish endpoint"
    )
    args = parser.parse_args()
    if not args.key:
        print(
            "run_pushpin: set --key or CGM_GRIP_KEY (shared with Django's GRIP_URL)",
            file=sys.stderr,
        )
        return 2
    if not (shutil.which("pushpin") and shutil.which("zurl")):
        subprocess.run(["bash", str(ROOT / "scripts" / "ensure-pushpin.sh")], check=True)

    rundir = ROOT / "var" / f"pushpin-{args.port}"
    config = render(
        rundir,
        port=args.port,
        offset=args.port_offset,
        origins=args.origin,
        key=args.key,
        log_level=args.log_level,
        listen_address=args.listen_address,
        publish_address=args.publish_address,
    )
    print(f"run_pushpin: clients connect to http://{args.listen_address}:{args.port}/", flush=True)
    publish_url = grip_url(args.port_offset, args.key, args.publish_address)
    print(f"run_pushpin: Django needs GRIP_URL={publish_url}", flush=True)
    return supervise(["pushpin", "--config", str(config), "--merge-output"])


# As systemd does for Debian's pushpin.service (Restart=always): start again 100 ms
# after an exit, and give up after 5 starts within 10 s (a configuration that cannot
# start is not retried forever).
RESTART_DELAY = 0.1
RESTART_BURST, RESTART_INTERVAL = 5, 10.0
# Ctrl-C (and tests/services.py's stop) signal the whole process group, Pushpin
# included; a second quit signal makes Pushpin's runner kill its services instead of
# stopping them. So a stop signal is passed on only if Pushpin has not begun to stop
# by then: when this launcher alone was signalled.
FORWARD_AFTER = 2.0


def supervise(command: list[str]) -> int:
    """Run Pushpin until this script is told to stop (SIGTERM, SIGINT), starting it
    again whenever it exits on its own; SIGHUP (reload) is passed on.

    Why: Pushpin's runner stops all of its processes when one of them dies, and
    Debian bookworm's connection manager (condure 1.9.1) can panic in a reconnect
    storm (docs/SCALING.md, fourteenth session). A deployment runs Pushpin under a
    supervisor for that; this launcher is the supervisor of the project's own runs,
    so they recover the way a deployment does, and say so in the log."""
    child: subprocess.Popen | None = None
    stop_signal: int | None = None
    stop_at = 0.0

    def stop(signum, _frame):
        nonlocal stop_signal, stop_at
        if stop_signal is None:
            stop_signal, stop_at = signum, time.monotonic()

    def reload(signum, _frame):
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, reload)
    starts: list[float] = []
    status = 0
    while stop_signal is None:
        starts = [t for t in starts if time.monotonic() - t < RESTART_INTERVAL]
        if len(starts) >= RESTART_BURST:
            print(
                f"run_pushpin: pushpin exited {RESTART_BURST} times within"
                f" {RESTART_INTERVAL:.0f} s; not starting it again",
                file=sys.stderr,
                flush=True,
            )
            return status or 1
        starts.append(time.monotonic())
        child = subprocess.Popen(command)  # noqa: S603 (our own config, no shell)
        forwarded = False
        while (status := child.poll()) is None:
            time.sleep(0.2)
            late = stop_signal is not None and time.monotonic() - stop_at >= FORWARD_AFTER
            if late and not forwarded:
                child.send_signal(stop_signal)
                forwarded = True
        # A status below 0 is the signal that ended Pushpin; a shell says 128 + it.
        status = 128 - status if status < 0 else status
        if stop_signal is not None:
            return status
        print(
            f"run_pushpin: pushpin exited unexpectedly (status {status});"
            f" starting it again in {RESTART_DELAY:.1f} s",
            file=sys.stderr,
            flush=True,
        )
        time.sleep(RESTART_DELAY)
    return status


if __name__ == "__main__":
    sys.exit(main())
