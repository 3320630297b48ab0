#!/usr/bin/env bash
# Install the system packages the tests need that npm cannot provide: Debian's Chromium for the
# end-to-end browser test (test/system/browser.test.ts drives /usr/bin/chromium with playwright-core;
# `npx playwright install` cannot download its own browser here). Idempotent: does nothing when
# Chromium is already installed.
set -euo pipefail

CHROMIUM=/usr/bin/chromium

if [ -x "$CHROMIUM" ]; then
  echo "install-system-deps: chromium already installed ($("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM")); nothing to do"
  exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1; then
  SUDO=(sudo)
else
  echo "install-system-deps: chromium is missing and this is not root and there is no sudo; install the Debian package 'chromium' by hand" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
echo "install-system-deps: chromium missing; running apt-get update"
"${SUDO[@]}" apt-get update
echo "install-system-deps: installing chromium (apt-get install -y --no-install-recommends chromium)"
"${SUDO[@]}" apt-get install -y --no-install-recommends chromium

if [ ! -x "$CHROMIUM" ]; then
  echo "install-system-deps: apt-get finished but $CHROMIUM is still missing" >&2
  exit 1
fi
echo "install-system-deps: installed $("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM")"
