#!/usr/bin/env bash
# Install the system packages the system tests need that npm cannot provide (`npm run test:system`):
# - Debian's Chromium for the end-to-end browser test (test/system/browser.test.ts drives
#   /usr/bin/chromium with playwright-core; `npx playwright install` cannot download its own browser here);
# - nginx for forward-auth behind a real auth_request (test/system/nginx-auth-request.test.ts);
# - Caddy for forward-auth behind a real forward_auth (test/system/caddy-forward-auth.test.ts);
# - redis-server for the Redis store, shared revocations and the refresh lock (test/system/redis-*.test.ts,
#   each starts its own server on a free loopback port), and its redis-cli (redis-tools, a dependency
#   of redis-server) to join three servers into a Redis Cluster (test/system/redis-store.test.ts).
# Idempotent: installs only what is missing.
set -euo pipefail

missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/sbin/nginx ] || missing+=(nginx)
[ -x /usr/bin/caddy ] || missing+=(caddy)
[ -x /usr/bin/redis-server ] || missing+=(redis-server)
[ -x /usr/bin/redis-cli ] || missing+=(redis-tools)

if [ "${#missing[@]}" -eq 0 ]; then
  echo "install-system-deps: chromium, nginx, caddy and redis-server already installed; nothing to do"
  exit 0
fi

. "$(dirname "$0")/lib/apt-install.sh"
apt_install install-system-deps "${missing[@]}"

for bin in /usr/bin/chromium /usr/sbin/nginx /usr/bin/caddy /usr/bin/redis-server /usr/bin/redis-cli; do
  if [ ! -x "$bin" ]; then
    echo "install-system-deps: apt-get finished but $bin is still missing" >&2
    exit 1
  fi
done
echo "install-system-deps: installed ${missing[*]}"
