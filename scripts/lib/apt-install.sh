# Sourced by scripts/install-*.sh. `apt_install TAG PACKAGE...` installs Debian packages as root or
# through sudo: apt-get update, then apt-get install -y --no-install-recommends. A policy-rc.d that
# answers 101 keeps the packages' maintainer scripts from starting their system services (containers
# without systemd, machines where port 80 is taken); it is removed again afterwards. TAG prefixes
# the messages. Exits the calling script on failure.

apt_install() {
  local tag=$1
  shift
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
      sudo=(sudo)
    else
      echo "$tag: missing $*, this is not root and there is no sudo; install the Debian packages by hand" >&2
      exit 1
    fi
  fi
  export DEBIAN_FRONTEND=noninteractive
  echo "$tag: missing $*; running apt-get update"
  "${sudo[@]}" apt-get update
  echo "$tag: apt-get install -y --no-install-recommends $*"
  local policy=/usr/sbin/policy-rc.d created_policy=0 status=0
  if [ ! -e "$policy" ] && [ "$(id -u)" -eq 0 ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod +x "$policy"
    created_policy=1
  fi
  "${sudo[@]}" apt-get install -y --no-install-recommends "$@" || status=$?
  if [ "$created_policy" -eq 1 ]; then rm -f "$policy"; fi
  if [ "$status" -ne 0 ]; then
    echo "$tag: apt-get install failed (exit $status)" >&2
    exit "$status"
  fi
}
