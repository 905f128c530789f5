#!/usr/bin/env bash
# Make sure Debian's Chromium is installed for the browser tests (tests/test_dashboard_browser.py).
#
# Playwright drives the system browser: `playwright install` downloads its own browser
# builds, which is not possible here, so we install the distribution's package instead.
# Idempotent: does nothing when /usr/bin/chromium is already there.
set -euo pipefail

CHROMIUM=/usr/bin/chromium

if [ -x "$CHROMIUM" ]; then
  echo "ensure-chromium: $($CHROMIUM --version 2>/dev/null || echo "$CHROMIUM") is installed"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "ensure-chromium: $CHROMIUM is missing and installing it needs root;" >&2
  echo "ensure-chromium: run as root or: sudo apt-get update && sudo apt-get install -y chromium" >&2
  exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure-chromium: $CHROMIUM is missing and there is no apt-get to install it with" >&2
  exit 1
fi

echo "ensure-chromium: installing Debian's chromium package"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium fonts-liberation >/dev/null

if [ ! -x "$CHROMIUM" ]; then
  echo "ensure-chromium: apt-get finished but $CHROMIUM is still missing" >&2
  exit 1
fi
echo "ensure-chromium: $($CHROMIUM --version 2>/dev/null || echo "$CHROMIUM") installed"
