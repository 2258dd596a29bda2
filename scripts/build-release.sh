#!/usr/bin/env bash
# The shipped build of the binaries: Cargo's release profile (fat LTO, one
# codegen unit, size-optimised; see Cargo.toml) with the C library linked
# statically, for the machine's own target triple.
#
#   scripts/build-release.sh -p pfs-csi-node -p pfs-csi-controller
#   scripts/build-release.sh --locked --bins
#
# Arguments go to `cargo build --release`. The binaries land in
# "<target dir>/<triple>/release/"; the script prints that directory on
# standard output (cargo's own output goes to standard error). A static binary has no dynamic loader to run and no shared
# library to map: it starts faster and stays smaller in memory. glibc's
# `files` and `dns` name services are built in, so host names still resolve.
#
# The target is named explicitly so that the flag reaches the binaries only:
# build scripts and proc-macros are built for the host, where a static C
# library cannot load them.
set -euo pipefail

triple="$(rustc -vV | sed -n 's/^host: //p')"
case "$triple" in
    *-linux-gnu) ;;
    *) echo "build-release.sh: $triple is not a glibc Linux target" >&2; exit 2 ;;
esac
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
    cargo build --release --target "$triple" "$@" >&2
target_dir="$(cargo metadata --format-version 1 --no-deps \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
echo "$target_dir/$triple/release"
