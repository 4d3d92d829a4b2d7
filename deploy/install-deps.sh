#!/usr/bin/env bash
# Installs everything agentd needs to build, run and be tested, from Debian's
# archive. Benchmark-only peers (C++ gRPC, containerd) are installed by the
# benchmarks themselves (tests/bench/*/run); podman is a test peer here (it
# pulls and runs what agentd pushed, tests/integration/test_push.py), and
# libcap2-bin's capsh checks agentctl capsh --decode. xz-utils and
# debian-archive-keyring: the conformance test (tests/conformance) unpacks
# critest and builds its stand-in images from Debian's busybox source.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
    build-essential cmake pkg-config git ca-certificates \
    protobuf-c-compiler libprotobuf-c-dev protobuf-compiler \
    libnghttp2-dev libssl-dev openssl libseccomp-dev libcap-dev libapparmor-dev \
    libarchive-dev libcurl4-openssl-dev libsqlite3-dev sqlite3 zlib1g-dev \
    libevent-dev libhttp-parser-dev libjansson-dev libinih-dev libcmocka-dev libyaml-dev \
    python3 python3-grpcio python3-grpc-tools python3-pytest python3-yaml python3-hpack python3-kubernetes \
    python3-websocket golang-go golang-github-docker-spdystream-dev \
    docker-registry apache2-utils skopeo umoci busybox-static \
    containernetworking-plugins iproute2 iptables curl zstd \
    crun runc podman libcap2-bin nghttp2-client procps util-linux musl-tools clang tmux \
    xz-utils debian-archive-keyring \
    prometheus systemd openssh-server openssh-client
