#!/usr/bin/env bash
# Builds the release binaries the way the image ships them (the Dockerfile runs this script):
# pfs-csi-controller and pfsctl with `cargo build --release`, and the node plugin linked
# statically (`-C target-feature=+crt-static`: glibc and libgcc inside the executable, still
# position independent). The node plugin runs on every node and idles most of the time; with
# no shared library mapped its idle memory is about 1 MiB smaller (docs/performance.md).
#
# The flag goes through `cargo rustc`, which gives it to the node's own crate only: Cargo
# would give RUSTFLAGS to every crate, and proc-macro crates can't be built with crt-static.
# Without glibc's static library (libc.a; Debian's libc6-dev has it, Fedora and RHEL ship it
# as glibc-static) the node is linked dynamically, and the script says so.
#
#   scripts/build-release.sh                                  # the image's three binaries
#   scripts/build-release.sh -p pfs-sim -p pfs-csi-bench      # and these packages as well
#
# Extra arguments go to the first `cargo build` only (packages to add), not to the node's.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked -p pfs-csi-controller -p pfsctl "$@"

static=(-C target-feature=+crt-static)
libc_a=$(${CC:-cc} -print-file-name=libc.a 2>/dev/null || true)
if [ "${PFS_CSI_DYNAMIC_NODE:-0}" = 1 ]; then
    static=()
elif [ "$libc_a" = "${libc_a#/}" ] || [ ! -e "$libc_a" ]; then
    echo "build-release: glibc's static library (libc.a) was not found: the node plugin is linked dynamically" >&2
    static=()
fi
cargo rustc --release --locked -p pfs-csi-node --bin pfs-csi-node -- ${static[@]+"${static[@]}"}
