#!/usr/bin/env bash
# Walks one volume through its whole lifecycle on a simulated filesystem, with the real
# controller and node plugins, using the pfsctl CLI client; prints every step and its output.
#
#   sudo bash scripts/demo.sh [lustre|beegfs7|beegfs8]     (default: lustre)
#
# Needs root: the simulator makes real bind mounts (under a temp dir only). Builds the
# binaries with `cargo build --workspace --bins` first (set SKIP_BUILD=1 to use binaries
# already built; CARGO_TARGET_DIR is honoured). Everything runs in a temp dir that is
# unmounted and removed at the end, also when a step fails or the script is interrupted.
set -euo pipefail

FS="${1:-lustre}"
case "$FS" in
lustre | beegfs7 | beegfs8) ;;
*)
    echo "usage: sudo bash scripts/demo.sh [lustre|beegfs7|beegfs8]" >&2
    exit 2
    ;;
esac
if [ "$(id -u)" -ne 0 ]; then
    echo "demo.sh: the simulated filesystem is made of real bind mounts, which need root: run 'sudo bash scripts/demo.sh $FS'" >&2
    exit 1
fi

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${CARGO_TARGET_DIR:-$REPO/target}/debug"

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
# Prints a command (with the binary's directory left out), then runs it.
run() {
    local shown=("$@")
    shown[0]="${shown[0]##*/}"
    printf '$ %s\n' "${shown[*]}"
    "$@"
}

if [ "${SKIP_BUILD:-0}" != 1 ]; then
    say "Building the binaries"
    if ! command -v cargo >/dev/null; then
        echo "demo.sh: cargo is not in root's PATH; run 'sudo env PATH=\"\$PATH\" bash scripts/demo.sh $FS', or build first and set SKIP_BUILD=1" >&2
        exit 1
    fi
    (cd "$REPO" && cargo build --workspace --bins)
fi
for b in pfs-csi-sim pfs-csi-controller pfs-csi-node pfsctl; do
    if [ ! -x "$BIN/$b" ]; then
        echo "demo.sh: $BIN/$b is missing: run 'cargo build --workspace --bins'" >&2
        exit 1
    fi
done

WORK="$(mktemp -d /tmp/pfs-csi-demo.XXXXXX)"
STATE="$WORK/serve"
CONTROLLER="unix://$WORK/controller.sock"
NODE="unix://$WORK/node.sock"
PODS="$STATE/pods"
SERVE_PID=""

# Mount points at or below $WORK, deepest first.
mounts_below() {
    awk -v dir="$WORK" '$5 == dir || index($5, dir "/") == 1 { print $5 }' /proc/self/mountinfo |
        awk '{ print length($0) " " $0 }' | sort -rn | cut -d' ' -f2-
}

stop_serve() {
    if [ -n "$SERVE_PID" ] && kill -0 "$SERVE_PID" 2>/dev/null; then
        kill -TERM "$SERVE_PID"
        for _ in $(seq 1 600); do
            kill -0 "$SERVE_PID" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$SERVE_PID" 2>/dev/null; then
            echo "demo.sh: serve did not stop within 60 s; killing it" >&2
            kill -KILL "$SERVE_PID" 2>/dev/null || true
        fi
        wait "$SERVE_PID" 2>/dev/null || true
    fi
    SERVE_PID=""
}

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    stop_serve
    local left
    left="$(mounts_below)"
    if [ -n "$left" ]; then
        echo "demo.sh: still mounted after serve stopped; unmounting:" >&2
        echo "$left" >&2
        while read -r m; do umount "$m" 2>/dev/null || umount -l "$m" || true; done <<<"$left"
        status=1
    fi
    if [ "$status" -ne 0 ] && [ -f "$WORK/serve.log" ]; then
        echo "--- last lines of the plugins' log ---" >&2
        tail -n 30 "$WORK/serve.log" >&2
    fi
    if [ -z "$(mounts_below)" ]; then
        rm -rf "$WORK"
    else
        echo "demo.sh: $WORK left in place: something is still mounted below it" >&2
        status=1
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "Starting the simulated $FS filesystem with the controller and node plugins"
printf '$ pfs-csi-sim serve --filesystem %s --state-dir %s --controller-endpoint %s --node-endpoint %s\n' \
    "$FS" "$STATE" "$CONTROLLER" "$NODE"
"$BIN/pfs-csi-sim" serve --filesystem "$FS" --state-dir "$STATE" \
    --controller-endpoint "$CONTROLLER" --node-endpoint "$NODE" \
    >"$WORK/serve.out" 2>"$WORK/serve.log" &
SERVE_PID=$!
for _ in $(seq 1 1200); do
    grep -qx ready "$WORK/serve.out" 2>/dev/null && break
    if ! kill -0 "$SERVE_PID" 2>/dev/null; then
        echo "demo.sh: serve exited before it was ready" >&2
        exit 1
    fi
    sleep 0.1
done
if ! grep -qx ready "$WORK/serve.out"; then
    echo "demo.sh: serve was not ready within 120 s" >&2
    exit 1
fi
cat "$WORK/serve.out"
echo "(plugin logs: $WORK/serve.log)"

ctl() { run "$BIN/pfsctl" --endpoint "$CONTROLLER" "$@"; }
node() { run "$BIN/pfsctl" --endpoint "$NODE" "$@"; }

# The CreateVolume parameters serve says this filesystem needs (none for Lustre).
PARAMS=()
params_line="$(sed -n 's/^CreateVolume parameters: //p' "$WORK/serve.out")"
if [ "$params_line" != "none needed" ]; then
    for kv in $params_line; do PARAMS+=(--param "$kv"); done
fi

# The value of "key": "value" in pfsctl's pretty-printed JSON.
json_field() { sed -n "s/^ *\"$1\": \"\(.*\)\",\{0,1\}$/\1/p" "$2" | head -n 1; }
# The volume context of a CreateVolume answer as --context flags.
context_flags() {
    awk '/"volume_context": \{\}/ { exit } /"volume_context": \{/ { inside = 1; next }
         inside && /^ *\}/ { exit } inside { print }' "$1" |
        sed -n 's/^ *"\([^"]*\)": "\(.*\)",\{0,1\}$/--context \1=\2/p'
}

# CreateVolume, retried while the plugin answers Aborted (exit 7: a restore in progress).
create() {
    local out="$1"
    shift
    for _ in $(seq 1 60); do
        local rc=0
        ctl --json volume create "$@" >"$out" || rc=$?
        case "$rc" in
        0)
            cat "$out"
            return 0
            ;;
        7)
            echo "(in progress; retrying)"
            sleep 1
            ;;
        *) return "$rc" ;;
        esac
    done
    return 1
}

say "1. Probe both plugins"
ctl identity probe
node identity probe
node node info

say "2. Create a 1 GiB volume"
create "$WORK/volume.json" demo-volume --size 1Gi --access-mode rwx "${PARAMS[@]}"
VOLUME="$(json_field volume_id "$WORK/volume.json")"
mapfile -t CONTEXT < <(context_flags "$WORK/volume.json" | tr ' ' '\n')

say "3. Stage it on the node"
node node stage "$VOLUME" --staging-path "$PODS/demo/staging" --access-mode rwx "${CONTEXT[@]}"

say "4. Publish it to a pod's target path"
node node publish "$VOLUME" --staging-path "$PODS/demo/staging" --target-path "$PODS/demo/target" \
    --access-mode rwx "${CONTEXT[@]}"

say "5. Write a file through the target path"
GREETING="hello from the demo, $(date -u +%FT%TZ)"
run tee "$PODS/demo/target/hello.txt" <<<"$GREETING"
run ls -l "$PODS/demo/target"

say "6. Volume stats"
node node stats "$VOLUME" --volume-path "$PODS/demo/target" --staging-path "$PODS/demo/staging"

say "7. Expand it to 2 GiB"
ctl volume expand "$VOLUME" --size 2Gi
node node stats "$VOLUME" --volume-path "$PODS/demo/target" --staging-path "$PODS/demo/staging"

say "8. Snapshot it and wait until the snapshot is ready"
ctl --json snapshot create demo-snapshot --source-volume "$VOLUME" | tee "$WORK/snapshot.json"
SNAPSHOT="$(json_field snapshot_id "$WORK/snapshot.json")"
ctl --timeout 2m snapshot wait "$SNAPSHOT" --interval 500ms

say "9. Restore the snapshot into a new volume and read the file from it"
create "$WORK/restored.json" demo-restored --size 2Gi --access-mode rwx --from-snapshot "$SNAPSHOT" "${PARAMS[@]}"
RESTORED="$(json_field volume_id "$WORK/restored.json")"
mapfile -t RCONTEXT < <(context_flags "$WORK/restored.json" | tr ' ' '\n')
node node stage "$RESTORED" --staging-path "$PODS/restored/staging" --access-mode rwx "${RCONTEXT[@]}"
node node publish "$RESTORED" --staging-path "$PODS/restored/staging" --target-path "$PODS/restored/target" \
    --access-mode rwx --read-only "${RCONTEXT[@]}"
run cat "$PODS/restored/target/hello.txt"
if [ "$(cat "$PODS/restored/target/hello.txt")" != "$GREETING" ]; then
    echo "demo.sh: the restored file is not the one written before the snapshot" >&2
    exit 1
fi
printf '$ touch %s   # published read-only: must fail\n' "$PODS/restored/target/new.txt"
if touch "$PODS/restored/target/new.txt" 2>/dev/null; then
    echo "demo.sh: a read-only publish took a write" >&2
    exit 1
fi
echo "refused: read-only file system"

say "10. Unpublish and unstage both volumes"
node node unpublish "$RESTORED" --target-path "$PODS/restored/target"
node node unstage "$RESTORED" --staging-path "$PODS/restored/staging"
node node unpublish "$VOLUME" --target-path "$PODS/demo/target"
node node unstage "$VOLUME" --staging-path "$PODS/demo/staging"

say "11. Delete the snapshot and both volumes"
ctl snapshot delete "$SNAPSHOT"
ctl volume delete "$RESTORED"
ctl volume delete "$VOLUME"
ctl volume list

say "12. Stop serve and check that nothing is left mounted"
stop_serve
tail -n 3 "$WORK/serve.log"
left="$(mounts_below)"
if [ -n "$left" ]; then
    echo "demo.sh: left mounted:" >&2
    echo "$left" >&2
    exit 1
fi
echo "nothing is mounted below $WORK; the demo's files are removed on exit"
