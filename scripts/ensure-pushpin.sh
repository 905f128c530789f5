#!/usr/bin/env bash
# Installs Debian's pushpin and zurl when missing (the Pushpin size and its tests).
set -euo pipefail
if command -v pushpin >/dev/null 2>&1 && command -v zurl >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != "0" ]; then
  echo "ensure-pushpin: pushpin/zurl missing and not root: install them with" \
       "'apt-get install pushpin zurl'" >&2
  exit 1
fi
echo "ensure-pushpin: installing Debian packages pushpin and zurl"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends pushpin zurl >/dev/null
# The package may start a system-wide instance; the project runs its own.
(service pushpin stop || systemctl stop pushpin || true) >/dev/null 2>&1
command -v pushpin >/dev/null
