#!/usr/bin/env bash
# Prepare a Debian 12 host without a Docker engine to run Quorum's compose stack with podman.
#
# Idempotent; safe to rerun.  Steps:
#   1. apt-get install podman podman-compose runc debootstrap docker-compose (skipped if all present)
#   2. /etc/containers/containers.conf: runc + cgroupfs + explicit ulimits (crun fails on
#      hybrid cgroups and on rlimits on our machines) + netavark (with aardvark-dns it gives
#      compose services name resolution) + a 1 s resolver timeout (see dns_options below)
#   3. the base image debian:bookworm, built locally with debootstrap (no registry needed),
#      also tagged docker.io/library/debian:bookworm so `FROM debian:bookworm` resolves offline.
#      The rootfs tarball is cached in $QUORUM_COMPOSE_CACHE (default /var/cache/quorum-compose).
#
# Environment:
#   QUORUM_COMPOSE_CACHE   cache dir for the rootfs tarball
#   DEBIAN_MIRROR          mirror for debootstrap and the image's apt sources (default deb.debian.org)
#   DEBIAN_SECURITY_MIRROR security mirror for the image's apt sources
#   QUORUM_REBUILD_BASE=1  rebuild the tarball and re-import the base image
set -euo pipefail

CACHE_DIR=${QUORUM_COMPOSE_CACHE:-/var/cache/quorum-compose}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
SUITE=bookworm
TARBALL="$CACHE_DIR/debian-$SUITE-minbase.tar"
BASE_TAGS=("debian:$SUITE" "docker.io/library/debian:$SUITE")
PACKAGES=(podman podman-compose runc debootstrap docker-compose)

t0=$(date +%s)
log() { printf '[podman-setup +%3ss] %s\n' "$(( $(date +%s) - t0 ))" "$*"; }

if [[ $(id -u) -ne 0 ]]; then
    echo "podman-setup.sh must run as root (it installs packages and writes /etc/containers)" >&2
    exit 1
fi

# --- 1. packages -------------------------------------------------------------------------
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" \
        netavark aardvark-dns slirp4netns uidmap fuse-overlayfs iptables >/dev/null
else
    log "packages already installed"
fi

# --- 2. containers.conf ------------------------------------------------------------------
conf=/etc/containers/containers.conf
want='# Written by quorum compose/podman-setup.sh
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=1024:1024"]
# aardvark-dns 1.4 drops queries while it reloads (whenever a container of the network
# starts or stops); with the glibc default of 5 s per try a lookup then stalls 5-40 s.
dns_options = ["timeout:1", "attempts:3"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"

[network]
network_backend = "netavark"
'
mkdir -p /etc/containers
if [[ -f $conf ]] && [[ "$(cat "$conf")" == "$(printf '%s' "$want")" ]]; then
    log "$conf already configured"
else
    [[ -f $conf ]] && cp -a "$conf" "$conf.bak.$(date +%s)"
    printf '%s' "$want" >"$conf"
    log "wrote $conf"
fi

# --- 3. base image -----------------------------------------------------------------------
have_all_tags=1
for tag in "${BASE_TAGS[@]}"; do
    podman image exists "$tag" || have_all_tags=0
done
if [[ ${QUORUM_REBUILD_BASE:-0} != 1 && $have_all_tags == 1 ]]; then
    log "base image ${BASE_TAGS[*]} already present"
    exit 0
fi

mkdir -p "$CACHE_DIR"
if [[ ${QUORUM_REBUILD_BASE:-0} == 1 || ! -s $TARBALL ]]; then
    rootfs=$(mktemp -d "$CACHE_DIR/rootfs.XXXXXX")
    trap 'rm -rf "$rootfs"' EXIT
    log "debootstrap --variant=minbase $SUITE (mirror $MIRROR)"
    debootstrap --variant=minbase "$SUITE" "$rootfs" "$MIRROR" >"$CACHE_DIR/debootstrap.log" 2>&1 || {
        tail -30 "$CACHE_DIR/debootstrap.log" >&2
        exit 1
    }
    # Same apt sources as the official image: release, updates and security.
    rm -f "$rootfs/etc/apt/sources.list"
    cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<SRC
Types: deb
URIs: $MIRROR
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $SECURITY_MIRROR
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    # Like the official image: no recommends by default, no stale lists or caches.
    printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' \
        >"$rootfs/etc/apt/apt.conf.d/99quorum-no-recommends"
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin \
        "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/log/*.log "$rootfs"/tmp/*
    : >"$rootfs/etc/resolv.conf"
    : >"$rootfs/etc/hostname"
    tar --numeric-owner -C "$rootfs" -cf "$TARBALL.tmp" .
    mv "$TARBALL.tmp" "$TARBALL"
    rm -rf "$rootfs"
    trap - EXIT
    log "cached rootfs $TARBALL ($(du -h "$TARBALL" | cut -f1))"
else
    log "using cached rootfs $TARBALL"
fi

log "importing ${BASE_TAGS[0]}"
podman import --change 'CMD ["/bin/bash"]' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    "$TARBALL" "${BASE_TAGS[0]}" >/dev/null
for tag in "${BASE_TAGS[@]:1}"; do
    podman tag "${BASE_TAGS[0]}" "$tag"
done
log "base image ready: $(podman image inspect --format '{{.Id}}' "${BASE_TAGS[0]}" | cut -c1-12)"
