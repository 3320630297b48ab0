#!/usr/bin/env bash
# Install the system packages the system tests need that npm cannot provide (`npm run test:system`):
# - Debian's Chromium for the end-to-end browser test (test/system/browser.test.ts drives
#   /usr/bin/chromium with playwright-core; `npx playwright install` cannot download its own browser here);
# - nginx for forward-auth behind a real auth_request (test/system/nginx-auth-request.test.ts).
# Idempotent: installs only what is missing.
set -euo pipefail

missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/sbin/nginx ] || missing+=(nginx)

if [ "${#missing[@]}" -eq 0 ]; then
  echo "install-system-deps: chromium and nginx already installed; nothing to do"
  exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1; then
  SUDO=(sudo)
else
  echo "install-system-deps: missing ${missing[*]}, this is not root and there is no sudo; install the Debian packages by hand" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
echo "install-system-deps: missing ${missing[*]}; running apt-get update"
"${SUDO[@]}" apt-get update
echo "install-system-deps: apt-get install -y --no-install-recommends ${missing[*]}"
# policy-rc.d 101 keeps nginx's maintainer scripts from starting the system service (containers without
# systemd, machines where port 80 is taken); the test runs its own nginx. Removed again afterwards.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ] && [ "$(id -u)" -eq 0 ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod +x "$policy"
  created_policy=1
fi
status=0
"${SUDO[@]}" apt-get install -y --no-install-recommends "${missing[@]}" || status=$?
if [ "$created_policy" -eq 1 ]; then rm -f "$policy"; fi
if [ "$status" -ne 0 ]; then
  echo "install-system-deps: apt-get install failed (exit $status)" >&2
  exit "$status"
fi

for bin in /usr/bin/chromium /usr/sbin/nginx; do
  if [ ! -x "$bin" ]; then
    echo "install-system-deps: apt-get finished but $bin is still missing" >&2
    exit 1
  fi
done
echo "install-system-deps: installed ${missing[*]}"
