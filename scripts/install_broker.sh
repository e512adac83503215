#!/usr/bin/env bash
# Install the Redis server the streaming tests start on 127.0.0.1 (Debian's `redis-server`).
# Idempotent and quiet: does nothing when a redis-server >= 7.0 is already on PATH. Needs root.
# It only installs; it never starts a server (each test session starts its own on a free port).
#
# Redis >= 7.0 is required: XINFO GROUPS reports the consumer group's lag from 7.0 on.
set -euo pipefail

fail() { echo "install_broker: ERROR: $*" >&2; exit 1; }

major_version() {
  redis-server --version 2>/dev/null | sed -n 's/.* v=\([0-9]*\)\..*/\1/p'
}

if command -v redis-server >/dev/null 2>&1 && [ "$(major_version)" -ge 7 ] 2>/dev/null; then
  exit 0
fi
[ "$(id -u)" -eq 0 ] || fail "redis-server >= 7 is missing and installing it needs root; try: sudo $0"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null || fail "apt-get update failed"
# --no-install-recommends: the server only, no redis-tools/ruby extras. Debian's postinst
# may try to start a service; without systemd it does not, and we never rely on it.
apt-get install -y -qq --no-install-recommends redis-server >/dev/null || fail "apt-get install redis-server failed"
command -v redis-server >/dev/null 2>&1 || fail "redis-server is still not on PATH after installing"
[ "$(major_version)" -ge 7 ] || fail "redis-server $(redis-server --version) is older than 7.0"
echo "install_broker: $(redis-server --version | cut -d' ' -f1-3)"
