# syntax=docker/dockerfile:1.7
#
# The pfs-csi image: /usr/bin/pfs-csi-controller, /usr/bin/pfs-csi-node and
# /usr/bin/pfsctl, and nothing of the simulator. Filesystem tools (lfs, lctl,
# mount.lustre, beegfs-ctl, beegfs) are not in the image: they come from the
# host or from the client DaemonSets (<kubeletDir>/plugins/<driver>/client/).
#
#   docker build -t pfs-csi:0.1.0 .
#
# deploy/validate.sh checks that the paths below are the binaries Cargo.toml
# declares and that every manifest runs one of them.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=trixie

# ---- build: the release binaries (the image keeps three of them)
FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS builder
WORKDIR /src
COPY . .
# Protobuf code is generated with protox (pure Rust): no protoc needed.
# scripts/build-release.sh: cargo build --release, the node plugin linked statically.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    bash scripts/build-release.sh \
    && mkdir -p /artifacts/release \
    && cp target/release/pfs-csi-controller target/release/pfs-csi-node target/release/pfsctl \
          /artifacts/release/

# ---- mount(8): util-linux's mount and umount with their shared libraries
# Lustre and BeeGFS mounts go through mount(8), which runs the mount.<type>
# helpers (mount.lustre) and keeps the util-linux option semantics the
# backends rely on; nothing else of a distribution is needed. Same Debian
# release as the runtime below, so the libraries match its glibc. Libraries
# go to their real (merged-/usr) directory, which glibc searches by default.
FROM debian:${DEBIAN_RELEASE}-slim AS mount-tools
RUN set -eu; \
    mkdir -p /out/usr/bin /out/etc; \
    for tool in /usr/bin/mount /usr/bin/umount; do \
      cp -L "$tool" /out/usr/bin/; \
      ldd "$tool" | awk '/=> \//{print $3}' | while read -r lib; do \
        case "$(basename "$lib")" in libc.so.*|ld-linux*) continue ;; esac; \
        dir="$(dirname "$(readlink -f "$lib")")"; \
        mkdir -p "/out$dir"; cp -L "$lib" "/out$dir/"; \
      done; \
    done; \
    ln -s ../proc/self/mounts /out/etc/mtab

# ---- runtime
# distroless/cc: glibc, CA certificates, tzdata, /etc/passwd with a nonroot
# user; no shell, no package manager. Plus mount/umount from above. The plugins
# are linked with packed relative relocations (bins/*/build.rs), which need
# glibc 2.36 or later: Debian 12 and later.
FROM gcr.io/distroless/cc-debian13:nonroot
COPY --from=mount-tools /out/ /
COPY --from=builder /artifacts/release/pfs-csi-controller /usr/bin/pfs-csi-controller
COPY --from=builder /artifacts/release/pfs-csi-node /usr/bin/pfs-csi-node
COPY --from=builder /artifacts/release/pfsctl /usr/bin/pfsctl
# Non-root by default: pfsctl needs no privilege. The controller and the node
# plugin mount filesystems (CAP_SYS_ADMIN, Bidirectional propagation): their
# manifests run them as root in a privileged container, explicitly.
USER 65532:65532
ENTRYPOINT ["/usr/bin/pfsctl"]
LABEL org.opencontainers.image.title="pfs-csi" \
      org.opencontainers.image.description="CSI driver for Lustre (EXAScaler) and BeeGFS" \
      org.opencontainers.image.licenses="Apache-2.0"
