#!/usr/bin/env bash
# The project's test command: formatting, lints, the whole test suite, and the offline
# validation of every deployment manifest. Run from anywhere; needs root for the tests
# that mount (they refuse to pass silently without it).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-test-deps.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings

echo "== build the binaries the integration tests start"
cargo build --workspace --bins --locked

echo "== tests"
cargo nextest run --workspace --all-features --locked --no-fail-fast
cargo test --workspace --doc --all-features --locked
# The embedding example drives the use cases through the exported mocks: it must still run.
cargo run --quiet -p csi-core --example embed_with_mocks --features mock --locked

echo "== fuzz every parser, 10 s per target"
bash scripts/fuzz.sh 10

echo "== deployment manifests"
bash deploy/validate.sh
