"""Write the checkout's `.env.local` once: local mode for `make run` and for every
`manage.py` command typed by hand in this checkout (cgm/settings.py load_local_env).

    python3 scripts/make_env_local.py [PATH]     # default: .env.local in the checkout

Never overwrites an existing file (the key signs sessions and stream tokens).
The file is git-ignored; production has none and sets its environment itself.
"""

import os
import secrets
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / ".env.local"
    text = (
        "# Local mode for this checkout, written once by `make run` (scripts/make_env_local.py).\n"
        "# Git-ignored; read by cgm/settings.py, where the real environment wins.\n"
        "DEBUG=1\n"
        f"SECRET_KEY={secrets.token_urlsafe(50)[:50]}\n"
    )
    try:
        # O_EXCL: never replace an existing file; 0600: the key is this user's only.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        print(f"{path} exists; left as it is")
        return 0
    with os.fdopen(fd, "w") as f:
        f.write(text)
    print(f"wrote {path} (DEBUG=1 and a random SECRET_KEY; git-ignored)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
