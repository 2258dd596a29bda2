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

echo "== the README's first command, on each simulated filesystem"
# The demo drives a volume's whole lifecycle through the real binaries; it must keep working.
for fs in lustre beegfs7 beegfs8; do
    demo_log="$(mktemp)"
    if ! SKIP_BUILD=1 bash scripts/demo.sh "$fs" > "$demo_log" 2>&1; then
        cat "$demo_log"
        rm -f "$demo_log"
        echo "scripts/demo.sh $fs failed" >&2
        exit 1
    fi
    rm -f "$demo_log"
    echo "demo.sh $fs: ok"
done

echo "== fuzz every parser, 10 s per target"
bash scripts/fuzz.sh 10

echo "== deployment manifests"
bash deploy/validate.sh
