#!/usr/bin/env bash
# Installs what the test suite needs on a fresh machine of our CI kind (Debian, root).
# Idempotent: a machine that has everything installs nothing.
set -euo pipefail

need_apt=()
command -v mkfs.xfs >/dev/null || need_apt+=(xfsprogs)
command -v unzip >/dev/null || need_apt+=(unzip)
command -v setfattr >/dev/null || need_apt+=(attr)
command -v xxh128sum >/dev/null || need_apt+=(xxhash)
if ((${#need_apt[@]})); then
    if [ "$(id -u)" -ne 0 ]; then
        echo "install-test-deps: need root to install ${need_apt[*]}" >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

python3 -c 'import yaml' 2>/dev/null || pip install --quiet pyyaml
python3 -c 'import kubernetes_validate' 2>/dev/null || pip install --quiet kubernetes-validate

command -v cargo-nextest >/dev/null || cargo install --locked cargo-nextest
echo "install-test-deps: ready"
