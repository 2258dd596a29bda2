#!/usr/bin/env bash
# Regenerates bins/node/symbol-order.txt: the functions the node plugin runs, in the order
# it first runs them, which the release build lays out together (see bins/node/build.rs).
#
# The release node plugin, built as the image has it, runs under valgrind's callgrind
# against the simulator, on each simulated filesystem: start-up, Probe, NodeGetInfo,
# NodeGetCapabilities, then stage, publish, stats, unpublish and unstage of a volume. Needs
# root (the simulator mounts) and valgrind. Run it after changes that rename or add much code on those paths; the bench's
# idle RSS of the node shows when the list has gone stale.
#
#   sudo scripts/node-symbol-order.sh
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
bin="$repo/target/release"
order="$repo/bins/node/symbol-order.txt"
command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install valgrind)" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "run as root: the simulator mounts" >&2; exit 1; }

# The node plugin as the image has it (statically linked, scripts/build-release.sh).
bash "$repo/scripts/build-release.sh" -p pfs-sim
work=$(mktemp -d /tmp/pfs-csi-order.XXXXXX)
serve_pid=
cleanup() {
    [ -n "$serve_pid" ] && kill "$serve_pid" 2>/dev/null && wait "$serve_pid" 2>/dev/null
    { grep " $work/" /proc/self/mountinfo || true; } | awk '{print $5}' | sort -r | xargs -r -n1 umount -l
    rm -rf "$work"
}
trap cleanup EXIT

# `volume_id` of pfsctl's JSON answer to volume create.
volume_id() { sed -n 's/.*"volume_id": *"\([^"]*\)".*/\1/p' | head -1; }

profile() {
    local fs=$1 d="$work/$1"
    mkdir -p "$d/pods" "$d/state"
    "$bin/pfs-csi-sim" serve --filesystem="$fs" --state-dir "$d/serve" \
        --controller-endpoint="unix://$d/c.sock" --node-endpoint="unix://$d/n.sock" \
        --bin-dir="$bin" >"$d/serve.out" 2>"$d/serve.log" &
    serve_pid=$!
    for _ in $(seq 100); do grep -q '^ready' "$d/serve.out" 2>/dev/null && break; sleep 0.2; done
    grep -q '^ready' "$d/serve.out" || { cat "$d/serve.log" >&2; exit 1; }
    # A second node plugin with serve's own arguments and environment, under callgrind.
    local node
    node=$(pgrep -f "pfs-csi-node.*$d/n.sock")
    mapfile -t args < <(tr '\0' '\n' <"/proc/$node/cmdline" | tail -n +2 \
        | sed "s|$d/n.sock|$d/n2.sock|; s|^--state-dir=.*|--state-dir=$d/state|")
    mapfile -t envs < <(tr '\0' '\n' <"/proc/$node/environ")
    env -i "${envs[@]}" valgrind --tool=callgrind --demangle=no \
        --callgrind-out-file="$d/callgrind.out" "$bin/pfs-csi-node" "${args[@]}" \
        >"$d/node.out" 2>"$d/node.log" &
    local profiled=$!
    for _ in $(seq 200); do [ -S "$d/n2.sock" ] && break; sleep 0.2; done
    local params=() kv
    for kv in $(sed -n 's/^CreateVolume parameters: *//p' "$d/serve.out"); do
        case "$kv" in *=*) params+=(--param "$kv") ;; esac
    done
    local ctl="$bin/pfsctl --endpoint unix://$d/c.sock" n="$bin/pfsctl --endpoint unix://$d/n2.sock"
    local id
    id=$($ctl --json volume create order-profile --size 1Gi "${params[@]}" | volume_id)
    for _ in 1 2 3; do $n identity probe >/dev/null; done
    $n node info >/dev/null
    $n node capabilities >/dev/null
    $n node stage "$id" --staging-path "$d/pods/staging" >/dev/null
    for i in 1 2 3; do
        $n node publish "$id" --staging-path "$d/pods/staging" --target-path "$d/pods/t$i" >/dev/null
        $n node stats "$id" --volume-path "$d/pods/t$i" >/dev/null
        $n node unpublish "$id" --target-path "$d/pods/t$i" >/dev/null
    done
    $n node unstage "$id" --staging-path "$d/pods/staging" >/dev/null
    $ctl volume delete "$id" >/dev/null
    kill -TERM "$profiled"
    wait "$profiled" || true
    kill "$serve_pid"
    wait "$serve_pid" 2>/dev/null || true
    serve_pid=
}

for fs in lustre beegfs8; do profile "$fs"; done

# Functions of the node binary (callgrind's `fn=` lines under its `ob=`), first run first,
# kept when the binary defines them.
nm --defined-only "$bin/pfs-csi-node" | awk 'NF == 3 && $2 ~ /^[tTwW]$/ {print $3}' \
    | sort -u >"$work/defined"
awk '
    # "ob=(3) /path" names object 3 and makes it current; "ob=(3)" refers back to it;
    # "cob=" only names. The same for functions with "fn=" and "cfn=".
    function id_and_name(line,    lp, rp) {
        lp = index(line, "("); rp = index(line, ")")
        id = substr(line, lp + 1, rp - lp - 1)
        name = substr(line, rp + 2)
    }
    /^c?ob=\(/ {
        id_and_name($0)
        if (name != "") obs[id] = name
        if ($0 ~ /^ob=/) here = (obs[id] ~ /pfs-csi-node$/)
        next
    }
    /^c?fn=\(/ {
        id_and_name($0)
        if (name != "") { sub(/\047.*/, "", name); fns[id] = name }
        if ($0 ~ /^fn=/ && here && !(fns[id] in seen)) { seen[fns[id]] = 1; print fns[id] }
    }
' "$work"/*/callgrind.out >"$work/run"
awk 'NR == FNR {defined[$0] = 1; next} ($0 in defined)' "$work/defined" "$work/run" >"$order"
echo "$(wc -l <"$order") of $(wc -l <"$work/run") functions run written to $order"
