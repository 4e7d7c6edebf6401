#!/usr/bin/env bash
# Idempotent machine set-up for devtrust on Debian/Ubuntu.
#   scripts/setup-system.sh packages   install the system packages that are missing
#   scripts/setup-system.sh services   start PostgreSQL and Redis if they are down,
#                                      and create the `devtrust` database role
# Runs as root, or through sudo when not root. Safe to run again and again.
set -euo pipefail

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

PACKAGES=(
  python3 python3-venv python3-dev gcc make pkg-config
  libtss2-dev swtpm swtpm-tools tpm2-tools jq curl
  redis-server redis-tools postgresql postgresql-client docker-compose rabbitmq-server
  nginx-light
  # the web console's browser tests drive Debian's Chromium (Playwright cannot download one here)
  chromium fonts-dejavu-core
)

say() { printf '[setup] %s\n' "$*" >&2; }

packages() {
  local missing=()
  for pkg in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if [ "${#missing[@]}" -eq 0 ]; then
    say "system packages present"
    return
  fi
  if ! command -v apt-get >/dev/null; then
    say "missing ${missing[*]} and no apt-get here: install them by hand"
    exit 1
  fi
  say "installing ${missing[*]}"
  $SUDO apt-get update -qq
  # Debian starts services from postinst when it can; we start them ourselves below.
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

as_postgres() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else sudo -u postgres "$@"; fi
}

postgres() {
  if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    local version
    version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
    if [ -z "$version" ]; then say "PostgreSQL is not installed: run scripts/setup-system.sh packages"; exit 1; fi
    say "starting PostgreSQL $version"
    $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
    pg_isready -q -h 127.0.0.1 -p 5432 || { say "PostgreSQL did not start"; exit 1; }
  fi
  # The tests create (and drop) their own databases as this role.
  as_postgres psql -q -v ON_ERROR_STOP=1 -d postgres <<'SQL' >/dev/null
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'devtrust') THEN
    CREATE ROLE devtrust LOGIN CREATEDB PASSWORD 'devtrust';
  END IF;
END
$$;
SQL
  say "PostgreSQL ready on 127.0.0.1:5432 (role devtrust)"
}

redis() {
  if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    say "starting Redis"
    mkdir -p /tmp/devtrust-redis
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
      --dir /tmp/devtrust-redis --logfile /tmp/devtrust-redis/redis.log
    for _ in $(seq 1 30); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 0.5; done
  fi
  redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null || { say "Redis did not start"; exit 1; }
  say "Redis ready on 127.0.0.1:6379"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

rabbitmq() {
  # Only for the test that shows an amqp:// broker works unchanged.
  if ! port_open 5672; then
    say "starting RabbitMQ"
    $SUDO rabbitmq-server -detached
    for _ in $(seq 1 60); do port_open 5672 && break; sleep 1; done
  fi
  port_open 5672 || { say "RabbitMQ did not start"; exit 1; }
  say "RabbitMQ ready on 127.0.0.1:5672"
}

case "${1:-}" in
  packages) packages ;;
  services) postgres; redis; rabbitmq ;;
  *) echo "usage: $0 packages|services" >&2; exit 2 ;;
esac
