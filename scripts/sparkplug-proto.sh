#!/usr/bin/env bash
# Regenerates src/sparkplug/proto.rs (the Sparkplug B protobuf types) from the vendored
# vendor/tahu/sparkplug_b.proto. Run it after changing the .proto; commit both files. Neither the
# gateway's build nor this script needs protoc: a small tool (scripts/sparkplug-proto/, its own
# workspace) parses the file with protox and generates the types with prost-build.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --quiet --locked --manifest-path scripts/sparkplug-proto/Cargo.toml \
  --target-dir target/sparkplug-proto
rustfmt --edition 2021 src/sparkplug/proto.rs
