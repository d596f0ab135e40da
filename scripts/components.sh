#!/usr/bin/env bash
# Install and start the external components the integration tests use, when they are missing:
# a Docker engine (docker.io, dockerd on its unix socket) and a local Python base image built from
# this machine's own Debian packages (no registry is needed). Runs as root (CI does); elsewhere it
# does what it can and the tests that need a missing component skip (or fail, in CI).
set -uo pipefail
cd "$(dirname "$0")/.."
BASE_IMAGE=${TRAINING_RUNS_BASE_IMAGE:-training-runs/python:3.11}

have_root() { [ "$(id -u)" = 0 ]; }

if ! command -v dockerd >/dev/null 2>&1 || ! dpkg -s python3-venv >/dev/null 2>&1; then
    if have_root; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io python3-venv python3-pip >/dev/null
    else
        echo "components: not root, cannot install docker.io; Docker tests will skip" >&2
    fi
fi

if command -v dockerd >/dev/null 2>&1 && ! docker info >/dev/null 2>&1 && have_root; then
    (dockerd --iptables=false --bridge=none >/tmp/dockerd.log 2>&1 &)
    for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
fi

if docker info >/dev/null 2>&1 && ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    /usr/bin/python3 scripts/hostfs_tar.py python3 python3-venv python3-pip \
        | docker import -c 'ENV LANG=C.UTF-8' -c 'CMD ["/bin/bash"]' - "$BASE_IMAGE" >/dev/null
fi
# Containers an interrupted earlier test session left on this daemon would fail the leftovers check.
if docker info >/dev/null 2>&1; then
    stale=$(docker ps -aq --filter label=training.managed=true)
    [ -z "$stale" ] || docker rm -f $stale >/dev/null
fi
docker info >/dev/null 2>&1 && echo "components: dockerd up, base image $BASE_IMAGE ready" || echo "components: no Docker engine"
exit 0
