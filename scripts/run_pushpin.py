"""Start Pushpin in front of Django: the "beyond one machine" size, on one host.

    .venv/bin/python scripts/run_pushpin.py --origin 127.0.0.1:8001 --port 7999

Listens on 127.0.0.1 only, clients and publishers alike; a deployment names the
interfaces it wants (`--listen-address 0.0.0.0 --publish-address 10.0.0.5`).

Renders deploy/pushpin/*.template into var/pushpin-<port>/ and runs Pushpin there
(in the foreground; Ctrl-C stops it). Django must run with
GRIP_URL=http://127.0.0.1:<5561 + offset>?iss=pushpin&key=<same key>, which this
script prints. Installs Debian's pushpin and zurl first when they are missing.
"""

import argparse
import os
import shutil
import subprocess
import sys
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
    os.execvp("pushpin", ["pushpin", "--config", str(config), "--merge-output"])  # noqa: S606


if __name__ == "__main__":
    sys.exit(main())
