#!/usr/bin/env bash
# The main job on embedded defaults: a fresh SQLite inventory, a few devices, a listing.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
export DEVTRUST_DATA_DIR="${DEVTRUST_DATA_DIR:-$(mktemp -d -t devtrust-demo.XXXXXX)}"
unset DEVTRUST_DATABASE_URL DEVTRUST_CONFIG

step() { printf '\n$ %s\n' "$*"; "$@"; }

echo "devtrust demo: inventory in $DEVTRUST_DATA_DIR/devtrust.db"
step devtrust devices add --os=macos --asset-tag=C00AA0AAAA0A
step devtrust devices add --os=windows --asset-tag=PF2ABCDE
step devtrust devices add --os=linux --asset-tag=LNX-4C4C4544
step devtrust devices ls
step devtrust devices enroll --asset-tag=C00AA0AAAA0A
step devtrust devices rm --asset-tag=PF2ABCDE
step devtrust devices ls
step devtrust audit ls
