#!/usr/bin/env bash
# The main job on embedded defaults: a Jamf Pro simulator with 1,000 computers, a worker
# with its scheduler, queue and locks on local files, the inventory in SQLite. No Redis,
# no PostgreSQL: it runs on a fresh machine. Everything it starts, it stops.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
export DEVTRUST_DATA_DIR="${DEVTRUST_DATA_DIR:-$(mktemp -d -t devtrust-demo.XXXXXX)}"
for name in $(env | grep -o '^DEVTRUST_[A-Z_]*' | grep -v '^DEVTRUST_DATA_DIR$'); do
  unset "$name"
done
mkdir -p "$DEVTRUST_DATA_DIR"
cd "$DEVTRUST_DATA_DIR"

step() { printf '\n$ %s\n' "$*"; "$@"; }
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

port=$(python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
echo "devtrust demo in $DEVTRUST_DATA_DIR"
echo "starting the Jamf Pro simulator (1,000 computers) on port $port"
devtrust jamf simulator --devices 1000 --port "$port" > simulator.log 2>&1 &
pids+=($!)
for _ in $(seq 100); do grep -q "Jamf Pro simulator" simulator.log && break; sleep 0.1; done

export DEVTRUST_JAMF_URL="http://127.0.0.1:$port"
export DEVTRUST_JAMF_CLIENT_ID=devtrust
export DEVTRUST_JAMF_CLIENT_SECRET=devtrust-secret   # the simulator's default, not a secret
export DEVTRUST_JAMF_SYNC_START_DELAY=0              # first full sync at once
echo "starting a worker with its scheduler (devtrust worker --beat); log: worker.log"
devtrust worker --beat --concurrency 1 > worker.log 2>&1 &
pids+=($!)

printf 'waiting for the first full sync'
synced=""
for _ in $(seq 120); do
  if devtrust jamf status --format json 2>/dev/null | grep -q '"status": "succeeded"'; then
    synced=yes
    break
  fi
  printf '.'
  sleep 1
done
echo
if [ -z "$synced" ]; then
  echo "error: no full sync finished within two minutes; the worker's log ends with:" >&2
  tail -20 worker.log >&2
  exit 1
fi
step devtrust jamf status
printf '\n$ devtrust devices ls   (the first rows)\n'
devtrust devices ls > devices.txt
head -12 devices.txt
echo "... $(($(wc -l < devices.txt) - 2)) devices in all"
step devtrust audit ls --type jamf.sync
