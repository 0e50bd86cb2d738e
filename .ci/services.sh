#!/usr/bin/env bash
# Start the servers the test suite needs when they are not already running: Redis on
# 127.0.0.1:6379, a Redis with an append-only file on 127.0.0.1:6380 (the durable setting
# the contract suite runs against in CI) and PostgreSQL on 127.0.0.1:5432 (user postgres,
# database "test").
# Installs them from Debian's packages when absent. Idempotent; safe to run twice.
set -euo pipefail

log() { echo "[services] $*"; }

apt_install() {
  if [ -z "${_apt_updated:-}" ]; then apt-get update -qq; _apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

wait_for() {  # wait_for NAME COMMAND...: up to 30 s
  local name=$1; shift
  for _ in $(seq 1 150); do "$@" >/dev/null 2>&1 && { log "$name is up"; return 0; }; sleep 0.2; done
  log "$name did not come up"; return 1
}

ensure_redis() {
  if command -v redis-cli >/dev/null && redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    log "redis already running"; return
  fi
  command -v redis-server >/dev/null || { log "installing redis"; apt_install redis-server redis-tools; }
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  wait_for redis redis-cli -h 127.0.0.1 -p 6379 ping
}

pg_ready() { pg_isready -h 127.0.0.1 -p 5432 -q; }

ensure_postgres() {
  if ! command -v pg_ctlcluster >/dev/null; then
    log "installing postgresql"; apt_install postgresql postgresql-client
  fi
  if ! pg_ready; then
    local version
    version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
    if [ -z "$version" ] || [ ! -d "/etc/postgresql/$version/main" ]; then
      version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
      pg_createcluster "$version" main >/dev/null
    fi
    # local test server only: trust connections from this machine
    local hba="/etc/postgresql/$version/main/pg_hba.conf"
    if ! grep -q "htcgrid-ci" "$hba"; then
      sed -i '1i host all all 127.0.0.1/32 trust # htcgrid-ci\nhost all all ::1/128 trust # htcgrid-ci\nlocal all all trust # htcgrid-ci' "$hba"
    fi
    pg_ctlcluster --skip-systemctl-redirect "$version" main start
    wait_for postgresql pg_ready
  else
    log "postgresql already running"
  fi
  if ! psql -h 127.0.0.1 -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'test'" | grep -q 1; then
    psql -h 127.0.0.1 -U postgres -d postgres -qc "CREATE DATABASE test"
  fi
}

ensure_redis_aof() {  # a second Redis with an append-only file: the durable configuration
  if redis-cli -h 127.0.0.1 -p 6380 ping >/dev/null 2>&1; then log "redis (aof) already running"; return; fi
  mkdir -p /var/lib/redis-htcgrid-aof
  redis-server --daemonize yes --bind 127.0.0.1 --port 6380 --save "" --appendonly yes \
    --appendfsync everysec --dir /var/lib/redis-htcgrid-aof --logfile /var/log/redis/ci-aof.log
  wait_for "redis (aof)" redis-cli -h 127.0.0.1 -p 6380 ping
}

ensure_redis
ensure_redis_aof
ensure_postgres
