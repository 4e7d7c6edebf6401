#!/usr/bin/env bash
# The main job on embedded defaults: a Jamf Pro simulator with 1,000 computers, a worker
# with its scheduler, queue and locks on local files, the inventory in SQLite; then a Linux
# device enrolled with its TPM (a swtpm, manufactured with EK certificates) through
# `devtrust serve`. No Redis, no PostgreSQL: it runs on a fresh machine. Everything it
# starts, it stops.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
export PATH="$repo/.venv/bin:$PATH"
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

free_port() {
  python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
wait_for() {  # wait_for FILE PATTERN WHAT: up to 30 s for PATTERN in FILE
  for _ in $(seq 300); do grep -q "$2" "$1" && return 0; sleep 0.1; done
  echo "error: $3 did not start; its log ends with:" >&2
  tail -20 "$1" >&2
  exit 1
}

port=$(free_port)
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

echo
echo "enrolling a Linux device with its TPM; a swtpm with EK certificates stands in for the chip"
PYTHONPATH="$repo" python -m tests.tpm "$DEVTRUST_DATA_DIR/swtpm" > swtpm.log 2>&1 &
pids+=($!)
api_port=$(free_port)
devtrust serve --port "$api_port" > serve.log 2>&1 &
pids+=($!)
wait_for swtpm.log '^tcti ' "the swtpm"
wait_for serve.log 'Uvicorn running' "devtrust serve"
echo "devtrust serve is on port $api_port; log: serve.log"

step devtrust config set device_trust.ekcert_allowed_cas "@$DEVTRUST_DATA_DIR/swtpm/ek-ca.pem"
credential() { python -c 'import json, sys; print(json.load(sys.stdin)["token"])'; }
printf '\n$ devtrust users add ops --roles device-admin,editor,access   (the first admin)\n'
ops=$(devtrust users add ops --roles device-admin,editor,access --format json | credential)
printf '\n$ devtrust users add alice --roles access   (her credential goes to the device)\n'
alice=$(devtrust users add alice --roles access --format json | credential)
step devtrust devices add --os linux --asset-tag LNX-DEMO-0001 --enroll | tee token.txt
token=$(sed -n 's/.*devtrust device enroll --token=\([^ ]*\).*/\1/p' token.txt)

# The device: its DMI tree says its serial; its TPM is the swtpm.
mkdir -p dmi
echo LNX-DEMO-0001 > dmi/product_serial
export DEVTRUST_DMI_DIR="$PWD/dmi" DEVTRUST_API_URL="http://127.0.0.1:$api_port"
DEVTRUST_TPM_TCTI=$(sed -n 's/^tcti //p' swtpm.log)
export DEVTRUST_TPM_TCTI DEVTRUST_USER_TOKEN="$alice"
step devtrust device enroll --token "$token"

# The admin, from anywhere: the same commands through the admin API, as ops (with
# DEVTRUST_API_URL and DEVTRUST_USER_TOKEN set, the CLI never opens the database).
export DEVTRUST_USER_TOKEN="$ops"
printf '\n(the admin commands below go through the admin API at %s, as ops)\n' "$DEVTRUST_API_URL"
step devtrust devices get LNX-DEMO-0001
step devtrust audit ls --type device.enroll
