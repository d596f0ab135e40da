#!/usr/bin/env bash
# Install and start the external components the integration tests use, when they are missing:
# a Docker engine (docker.io, dockerd on its unix socket and on tcp://127.0.0.1:2376 with mutual
# TLS, certificates made here by openssl) and a local Python base image built from this machine's
# own Debian packages (no registry is needed). Runs as root (CI does); elsewhere it does what it
# can and the tests that need a missing component skip (or fail, in CI).
set -uo pipefail
cd "$(dirname "$0")/.."
BASE_IMAGE=${TRAINING_RUNS_BASE_IMAGE:-training-runs/python:3.11}

have_root() { [ "$(id -u)" = 0 ]; }

if ! command -v dockerd >/dev/null 2>&1 || ! dpkg -s python3-venv >/dev/null 2>&1 || ! command -v openssl >/dev/null 2>&1; then
    if have_root; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io python3-venv python3-pip openssl >/dev/null
    else
        echo "components: not root, cannot install docker.io; Docker tests will skip" >&2
    fi
fi

# TLS material for the daemon's TCP listener: a CA, a server certificate for 127.0.0.1/localhost
# and a client certificate (ca.pem, cert.pem, key.pem: the DOCKER_CERT_PATH layout). Made once and
# reused; the keys of the CA and the server stay in private/ (root only), the client key is readable
# by root and the docker group, like the daemon's unix socket.
DOCKER_TLS_DIR=${TRAINING_RUNS_DOCKER_TLS_DIR:-/var/lib/training-runs-components/docker-tls}
DOCKER_TLS_URL=tcp://127.0.0.1:2376

docker_tls_valid() {
    local f
    for f in ca.pem cert.pem key.pem private/ca-key.pem private/server-cert.pem private/server-key.pem; do
        [ -s "$DOCKER_TLS_DIR/$f" ] || return 1
    done
    for f in ca.pem cert.pem private/server-cert.pem; do
        openssl x509 -checkend 86400 -noout -in "$DOCKER_TLS_DIR/$f" >/dev/null 2>&1 || return 1
    done
    openssl verify -CAfile "$DOCKER_TLS_DIR/ca.pem" "$DOCKER_TLS_DIR/cert.pem" "$DOCKER_TLS_DIR/private/server-cert.pem" \
        >/dev/null 2>&1
}

make_docker_tls() {
    docker_tls_valid && return 0
    local d=$DOCKER_TLS_DIR p=$DOCKER_TLS_DIR/private
    [ -d "$(dirname "$d")" ] || mkdir -p -m 755 "$(dirname "$d")"
    (
        umask 077
        mkdir -p "$p" && chmod 700 "$p" && chmod 750 "$d"
        openssl genrsa -out "$p/ca-key.pem" 3072 2>/dev/null
        openssl req -x509 -new -sha256 -days 3650 -key "$p/ca-key.pem" -subj "/CN=training-runs test docker CA" \
            -out "$d/ca.pem"
        openssl genrsa -out "$p/server-key.pem" 3072 2>/dev/null
        openssl req -new -sha256 -key "$p/server-key.pem" -subj "/CN=localhost" -out "$p/server.csr"
        printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >"$p/server.ext"
        openssl x509 -req -sha256 -days 3650 -in "$p/server.csr" -CA "$d/ca.pem" -CAkey "$p/ca-key.pem" \
            -CAserial "$p/ca.srl" -CAcreateserial -extfile "$p/server.ext" -out "$p/server-cert.pem" 2>/dev/null
        openssl genrsa -out "$d/key.pem" 3072 2>/dev/null
        openssl req -new -sha256 -key "$d/key.pem" -subj "/CN=training-runs test client" -out "$p/client.csr"
        printf 'extendedKeyUsage=clientAuth\n' >"$p/client.ext"
        openssl x509 -req -sha256 -days 3650 -in "$p/client.csr" -CA "$d/ca.pem" -CAkey "$p/ca-key.pem" \
            -CAserial "$p/ca.srl" -CAcreateserial -extfile "$p/client.ext" -out "$d/cert.pem" 2>/dev/null
        rm -f "$p"/*.csr "$p"/*.ext
        chmod 644 "$d/ca.pem" "$d/cert.pem"
        if getent group docker >/dev/null; then chgrp docker "$d" "$d/key.pem" && chmod 640 "$d/key.pem"; fi
    )
    docker_tls_valid || { echo "components: could not make the Docker TLS certificates in $d" >&2; return 1; }
}

docker_tls_up() {
    docker -H "$DOCKER_TLS_URL" --tlsverify --tlscacert "$DOCKER_TLS_DIR/ca.pem" --tlscert "$DOCKER_TLS_DIR/cert.pem" \
        --tlskey "$DOCKER_TLS_DIR/key.pem" info >/dev/null 2>&1
}

start_dockerd() {
    local tls=()
    if docker_tls_valid; then
        tls=(-H unix:///var/run/docker.sock -H "$DOCKER_TLS_URL" --tlsverify --tlscacert "$DOCKER_TLS_DIR/ca.pem"
             --tlscert "$DOCKER_TLS_DIR/private/server-cert.pem" --tlskey "$DOCKER_TLS_DIR/private/server-key.pem")
    fi
    (dockerd --iptables=false --bridge=none "${tls[@]}" >/tmp/dockerd.log 2>&1 &)
    for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
}

if command -v dockerd >/dev/null 2>&1 && have_root; then
    make_docker_tls
    if ! docker info >/dev/null 2>&1; then
        start_dockerd
    elif docker_tls_valid && ! docker_tls_up; then
        # Running (started by an earlier version of this script) but not serving TLS on 127.0.0.1:2376,
        # or with other certificates: restart it with both listeners. Images survive; containers stop.
        echo "components: restarting dockerd to add the TLS listener $DOCKER_TLS_URL" >&2
        if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet docker 2>/dev/null; then
            systemctl stop docker.socket docker.service
        fi
        pkill -x dockerd
        for _ in $(seq 120); do pgrep -x dockerd >/dev/null || break; sleep 0.5; done
        start_dockerd
    fi
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
docker_tls_up && echo "components: dockerd also on $DOCKER_TLS_URL (TLS, client certificates in $DOCKER_TLS_DIR)" \
    || echo "components: no Docker TLS endpoint on $DOCKER_TLS_URL"
exit 0
