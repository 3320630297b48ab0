#!/usr/bin/env bash
# Install what `npm run bench` compares Portcullis against (issue #4 point 3), from Debian packages:
#   wrk                            the load generator (without it the bench skips its load runs, except
#                                  `--smoke`, which then uses a small built-in Node load generator)
#   nginx                          plain reverse proxy: the native ceiling
#   apache2 + libapache2-mod-auth-openidc   Apache + mod_auth_openidc with a valid session
# Idempotent: installs only the packages that are missing, and does nothing when all are present.
# The bench runs nginx and Apache itself with generated configs in a temp dir; the system services
# these packages install are stopped and disabled here so they do not hold ports 80 or run on the
# cores the bench pins its servers to.
set -euo pipefail

PACKAGES=(wrk nginx apache2 libapache2-mod-auth-openidc)

missing=()
for pkg in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$pkg")
  fi
done

if [ "${#missing[@]}" -eq 0 ]; then
  echo "install-bench-peers: all installed (${PACKAGES[*]}); nothing to do"
else
  . "$(dirname "$0")/lib/apt-install.sh"
  apt_install install-bench-peers "${missing[@]}"
fi

# Stop the distribution services if they were started anyway (they are not used by the bench).
SUDO=()
[ "$(id -u)" -eq 0 ] || SUDO=(sudo)
for svc in nginx apache2; do
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
    "${SUDO[@]}" systemctl stop "$svc" || true
    "${SUDO[@]}" systemctl disable "$svc" >/dev/null 2>&1 || true
    echo "install-bench-peers: stopped and disabled the $svc system service"
  fi
done

for bin in wrk nginx apache2; do
  path=$(command -v "$bin" || true)
  if [ -z "$path" ] && [ -x "/usr/sbin/$bin" ]; then path=/usr/sbin/$bin; fi
  echo "install-bench-peers: $bin -> ${path:-MISSING}"
done
if [ -e /usr/lib/apache2/modules/mod_auth_openidc.so ]; then
  echo "install-bench-peers: mod_auth_openidc -> /usr/lib/apache2/modules/mod_auth_openidc.so"
else
  echo "install-bench-peers: mod_auth_openidc -> MISSING"
fi
