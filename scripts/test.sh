#!/usr/bin/env bash
# The whole test suite: installs the real parts it needs, then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/test-deps.sh
export PATH="$PATH:/usr/sbin"
cargo test --locked --all-targets
