#!/usr/bin/env bash
# Install and start the external components the integration tests use, when they are missing:
# a Docker engine (docker.io, dockerd on its unix socket and on tcp://127.0.0.1:2376 with mutual
# TLS, certificates made here by openssl) and a local Python base image built from this machine's
# own Debian packages (no registry is needed). Runs as root (CI does); elsewhere it does what it
# can and the tests that need a missing component skip (or fail, in CI). PostgreSQL and Redis are
# only installed here: scripts/cluster.sh starts them for the multi-worker deployment's tests.
# Chromium and its chromedriver are installed for the browser system tests (tests/system/test_browser_ui.py).
set -uo pipefail
cd "$(dirname "$0")/.."
BASE_IMAGE=${TRAINING_RUNS_BASE_IMAGE:-training-runs/python:3.11}

have_root() { [ "$(id -u)" = 0 ]; }

if ! command -v dockerd >/dev/null 2>&1 || ! dpkg -s python3-venv >/dev/null 2>&1 || ! command -v openssl >/dev/null 2>&1 \
    || ! dpkg -s openssh-server >/dev/null 2>&1 || ! dpkg -s openssh-client >/dev/null 2>&1 \
    || ! dpkg -s openmpi-bin >/dev/null 2>&1 || ! dpkg -s mpich >/dev/null 2>&1 \
    || ! dpkg -s postgresql >/dev/null 2>&1 || ! dpkg -s redis-server >/dev/null 2>&1 \
    || ! dpkg -s slurmctld slurmd slurmdbd slurm-client munge mariadb-server slurm-wlm-mysql-plugin >/dev/null 2>&1 \
    || ! dpkg -s radosgw ceph-mon ceph-osd rsync >/dev/null 2>&1 \
    || ! dpkg -s chromium chromium-driver >/dev/null 2>&1; then
    if have_root; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io python3-venv python3-pip openssl \
            openssh-server openssh-client openmpi-bin mpich postgresql redis-server \
            slurmctld slurmd slurmdbd slurm-client munge mariadb-server slurm-wlm-mysql-plugin \
            radosgw ceph-mon ceph-osd rsync chromium chromium-driver >/dev/null
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

# The base image: this machine's python3 packages (docker import), then the standard library compiled
# to .pyc as an installed Debian package or an official python image has it (dpkg -L lists no .pyc:
# without this layer every new container would compile each module it imports, ~0.1 s per start).
build_base_image() {
    local ctx rc
    ctx=$(mktemp -d) || return 1
    /usr/bin/python3 scripts/hostfs_tar.py python3 python3-venv python3-pip \
        | docker import -c 'ENV LANG=C.UTF-8' -c 'CMD ["/bin/bash"]' - "$BASE_IMAGE-rootfs" >/dev/null || return 1
    printf '%s\n' "FROM $BASE_IMAGE-rootfs" \
        'RUN python3 -m compileall -q -j 0 /usr/lib/python3 /usr/lib/python3.11 >/dev/null 2>&1; python3 -c "import json"' \
        'LABEL training.stdlib-compiled=yes' >"$ctx/Dockerfile"
    docker build -q --network none -t "$BASE_IMAGE" "$ctx" >/dev/null
    rc=$?
    docker rmi "$BASE_IMAGE-rootfs" >/dev/null 2>&1  # only untags it
    rm -rf "$ctx"
    return $rc
}
if docker info >/dev/null 2>&1 && [ "$(docker image inspect -f '{{index .Config.Labels "training.stdlib-compiled"}}' \
        "$BASE_IMAGE" 2>/dev/null)" != yes ]; then
    build_base_image || echo "components: could not build the base image $BASE_IMAGE" >&2
fi
# Containers an interrupted earlier test session left on this daemon would fail the leftovers check.
if docker info >/dev/null 2>&1; then
    stale=$(docker ps -aq --filter label=training.managed=true)
    [ -z "$stale" ] || docker rm -f $stale >/dev/null
fi
docker info >/dev/null 2>&1 && echo "components: dockerd up, base image $BASE_IMAGE ready" || echo "components: no Docker engine"
docker_tls_up && echo "components: dockerd also on $DOCKER_TLS_URL (TLS, client certificates in $DOCKER_TLS_DIR)" \
    || echo "components: no Docker TLS endpoint on $DOCKER_TLS_URL"
# SSH hosts for the SSH target's tests; root logs in to both with one client key
# ($SSHD_DIR/client_ed25519, made here; tests/ssh_hosts.py reads the same files):
#  * a loopback sshd on 127.0.0.1:2222 (this machine's filesystem), state in $SSHD_DIR;
#  * a separate host: the container $SSH_HOST_CONTAINER at $SSH_HOST_IP:22 on the docker network
#    $SSH_NET, with its own filesystem and hostname, from the image $SSH_HOST_IMAGE built offline
#    from this machine's packages (built once; remade only when missing or its keys changed).
# Tests may rotate a server's host key; the original keys stay in the state folders (and in
# /etc/ssh/original/ in the container) and are put back here when a test left a key rotated.
COMPONENTS_DIR=${TRAINING_RUNS_COMPONENTS_DIR:-/var/lib/training-runs-components}
SSHD_DIR=$COMPONENTS_DIR/sshd
SSHD_PORT=2222
SSH_HOST_DIR=$COMPONENTS_DIR/ssh-host
SSH_HOST_IMAGE=training-runs/ssh-host:3.11
SSH_HOST_CONTAINER=training-runs-ssh-host
SSH_NET=training-runs-net
SSH_NET_SUBNET=172.28.0.0/24
SSH_HOST_IP=172.28.0.10

# The host key HOST:PORT presents ("ssh-ed25519 AAAA..."), or nothing when no SSH server answers.
ssh_key_seen() {
    ssh-keyscan -T 3 -t ed25519 -p "$2" "$1" 2>/dev/null | awk 'NF >= 3 { print $2 " " $3; exit }'
}
pub_key() { awk '{ print $1 " " $2; exit }' "$1" 2>/dev/null; }
# Wait until HOST:PORT presents KEY (sshd re-executes itself on SIGHUP: the port is briefly closed).
wait_for_key() {
    local _
    for _ in $(seq 100); do [ "$(ssh_key_seen "$1" "$2")" = "$3" ] && return 0; sleep 0.1; done
    return 1
}
make_key() {  # FILE COMMENT: an ed25519 key pair, once
    [ -s "$1" ] && [ -s "$1.pub" ] && return 0
    rm -f "$1" "$1.pub" && ssh-keygen -q -t ed25519 -N '' -C "$2" -f "$1"
}

sshd_loopback_config() {
    cat <<CFG
# Written by scripts/components.sh: the loopback sshd of the SSH target's tests.
ListenAddress 127.0.0.1
Port $SSHD_PORT
HostKey $SSHD_DIR/active_host_key
PidFile $SSHD_DIR/sshd.pid
AuthorizedKeysFile $SSHD_DIR/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PrintMotd no
MaxSessions 64
MaxStartups 64:30:128
Subsystem sftp internal-sftp
LogLevel ERROR
CFG
}

start_loopback_sshd() {
    local d=$SSHD_DIR reload= pid= config
    mkdir -p -m 755 "$d" && mkdir -p -m 755 /run/sshd || return 1  # /run/sshd: sshd's privilege separation dir
    make_key "$d/host_ed25519" training-runs-loopback-host && make_key "$d/client_ed25519" training-runs-tests || return 1
    cmp -s "$d/client_ed25519.pub" "$d/authorized_keys" || install -m 600 "$d/client_ed25519.pub" "$d/authorized_keys"
    if ! cmp -s "$d/host_ed25519" "$d/active_host_key" || ! cmp -s "$d/host_ed25519.pub" "$d/active_host_key.pub"; then
        install -m 600 "$d/host_ed25519" "$d/active_host_key" && install -m 644 "$d/host_ed25519.pub" "$d/active_host_key.pub"
        reload=1
    fi
    config=$(sshd_loopback_config)
    if [ "$config" != "$(cat "$d/sshd_config" 2>/dev/null)" ]; then
        printf '%s\n' "$config" >"$d/sshd_config" && reload=1
    fi
    /usr/sbin/sshd -t -f "$d/sshd_config" || return 1
    pid=$(cat "$d/sshd.pid" 2>/dev/null)
    if [ -n "$pid" ] && tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -qF -- "-f $d/sshd_config "; then
        [ -n "$reload" ] && kill -HUP "$pid"
    elif [ -n "$(ssh_key_seen 127.0.0.1 "$SSHD_PORT")" ]; then
        echo "components: 127.0.0.1:$SSHD_PORT is served by an sshd this script did not start" >&2
        return 1
    else
        /usr/sbin/sshd -f "$d/sshd_config" -E "$d/sshd.log" || return 1  # daemonizes, writes sshd.pid
    fi
    wait_for_key 127.0.0.1 "$SSHD_PORT" "$(pub_key "$d/host_ed25519.pub")"
}

# sshd_config of a test host container: $1 names it, any further arguments are extra lines.
host_sshd_config() {
    local title=$1
    shift
    cat <<CFG
# Written by scripts/components.sh: $title.
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PrintMotd no
MaxSessions 64
MaxStartups 64:30:128
Subsystem sftp internal-sftp
CFG
    printf '%s\n' "$@" "LogLevel ERROR"
}

ssh_host_sshd_config() {
    host_sshd_config "the SSH host container of the SSH target's tests"
}

# The image: this machine's python3 + openssh-server packages (docker import), then a build without
# network adding the sshd user, a baked host key (also kept in /etc/ssh/original/) and root's key.
build_ssh_host_image() {
    local keys=$1 ctx rootfs=training-runs/ssh-host-rootfs:3.11 rc
    ctx=$(mktemp -d) || return 1
    if ! /usr/bin/python3 scripts/hostfs_tar.py python3 python3-venv python3-pip openssh-server 2>/dev/null \
            | docker import -c 'ENV LANG=C.UTF-8' - "$rootfs" >/dev/null; then
        rm -rf "$ctx"
        return 1
    fi
    cp "$SSH_HOST_DIR/host_ed25519" "$ctx/ssh_host_ed25519_key"
    cp "$SSH_HOST_DIR/host_ed25519.pub" "$ctx/ssh_host_ed25519_key.pub"
    cp "$SSHD_DIR/client_ed25519.pub" "$ctx/authorized_keys"
    ssh_host_sshd_config >"$ctx/sshd_config"
    cat >"$ctx/Dockerfile" <<DOCKERFILE
FROM $rootfs
COPY ssh_host_ed25519_key ssh_host_ed25519_key.pub authorized_keys sshd_config /tmp/ssh/
RUN set -e; getent passwd sshd >/dev/null || useradd -r -d /run/sshd -s /usr/sbin/nologin sshd; \\
    mkdir -p -m 755 /run/sshd /etc/ssh/original; mkdir -p -m 700 /root/.ssh; \\
    install -m 600 /tmp/ssh/ssh_host_ed25519_key /etc/ssh/original/ssh_host_ed25519_key; \\
    install -m 644 /tmp/ssh/ssh_host_ed25519_key.pub /etc/ssh/original/ssh_host_ed25519_key.pub; \\
    cp -p /etc/ssh/original/ssh_host_ed25519_key /etc/ssh/original/ssh_host_ed25519_key.pub /etc/ssh/; \\
    install -m 600 /tmp/ssh/authorized_keys /root/.ssh/authorized_keys; \\
    install -m 644 /tmp/ssh/sshd_config /etc/ssh/sshd_config; rm -rf /tmp/ssh; /usr/sbin/sshd -t
EXPOSE 22
CMD ["/usr/sbin/sshd", "-D", "-e"]
DOCKERFILE
    docker build -q --network none --label training.test-component=ssh-host --label "training.ssh-keys=$keys" \
        -t "$SSH_HOST_IMAGE" "$ctx" >"$ctx/build.log" 2>&1  # the legacy builder warns on every build
    rc=$?
    [ $rc = 0 ] || cat "$ctx/build.log" >&2
    docker rmi "$rootfs" >/dev/null 2>&1  # only untags it: the image built on it keeps the layers
    rm -rf "$ctx"
    return $rc
}

start_ssh_host() {
    local keys image old_image= state subnet original seen= _
    mkdir -p -m 755 "$SSH_HOST_DIR" && make_key "$SSH_HOST_DIR/host_ed25519" training-runs-ssh-host || return 1
    [ -s "$SSHD_DIR/client_ed25519.pub" ] || return 1
    keys=$(cat "$SSH_HOST_DIR/host_ed25519.pub" "$SSHD_DIR/client_ed25519.pub" | sha256sum | cut -c1-16)
    if [ "$(docker image inspect -f '{{index .Config.Labels "training.ssh-keys"}}' "$SSH_HOST_IMAGE" 2>/dev/null)" != "$keys" ]; then
        old_image=$(docker image inspect -f '{{.Id}}' "$SSH_HOST_IMAGE" 2>/dev/null)
        build_ssh_host_image "$keys" || { echo "components: could not build $SSH_HOST_IMAGE" >&2; return 1; }
    fi
    image=$(docker image inspect -f '{{.Id}}' "$SSH_HOST_IMAGE") || return 1
    subnet=$(docker network inspect -f '{{range .IPAM.Config}}{{.Subnet}}{{end}}' "$SSH_NET" 2>/dev/null)
    if [ -z "$subnet" ]; then
        docker network create --driver bridge --subnet "$SSH_NET_SUBNET" --label training.test-component=network \
            "$SSH_NET" >/dev/null || return 1
    elif [ "$subnet" != "$SSH_NET_SUBNET" ]; then
        echo "components: docker network $SSH_NET has subnet $subnet, not $SSH_NET_SUBNET" >&2
        return 1
    fi
    state=$(docker inspect -f '{{.State.Running}} {{.Image}} {{index .Config.Labels "training.test-component"}}' \
        "$SSH_HOST_CONTAINER" 2>/dev/null)
    if [ -n "$state" ] && [ "${state##* }" != ssh-host ]; then
        echo "components: a container named $SSH_HOST_CONTAINER exists that this script did not make" >&2
        return 1
    fi
    if [ -n "$state" ] && [ "$(echo "$state" | cut -d' ' -f2)" != "$image" ]; then
        docker rm -f "$SSH_HOST_CONTAINER" >/dev/null && state=
    fi
    if [ -z "$state" ]; then
        docker run -d --name "$SSH_HOST_CONTAINER" --hostname "$SSH_HOST_CONTAINER" --network "$SSH_NET" \
            --ip "$SSH_HOST_IP" --label training.test-component=ssh-host --restart unless-stopped \
            "$SSH_HOST_IMAGE" >/dev/null || return 1
    elif [ "${state%% *}" != true ]; then
        docker start "$SSH_HOST_CONTAINER" >/dev/null || return 1
    fi
    # The image this run replaced, when nothing uses it any more.
    [ -z "$old_image" ] || [ "$old_image" = "$image" ] || docker rmi "$old_image" >/dev/null 2>&1
    original=$(pub_key "$SSH_HOST_DIR/host_ed25519.pub")
    for _ in $(seq 100); do seen=$(ssh_key_seen "$SSH_HOST_IP" 22) && [ -n "$seen" ] && break; sleep 0.1; done
    [ "$seen" = "$original" ] && return 0
    # A test left the host key rotated: put the original back.
    docker exec "$SSH_HOST_CONTAINER" sh -c 'cp -p /etc/ssh/original/ssh_host_ed25519_key \
        /etc/ssh/original/ssh_host_ed25519_key.pub /etc/ssh/ && kill -HUP 1' >/dev/null 2>&1
    wait_for_key "$SSH_HOST_IP" 22 "$original"
}

if have_root && [ -x /usr/sbin/sshd ] && command -v ssh-keygen >/dev/null 2>&1; then
    mkdir -p -m 755 "$COMPONENTS_DIR"
    exec 9>"$COMPONENTS_DIR/.ssh.lock" && flock -w 300 9  # one run at a time sets the SSH hosts up
    start_loopback_sshd || echo "components: could not start the loopback sshd (log: $SSHD_DIR/sshd.log)" >&2
    if docker info >/dev/null 2>&1; then
        start_ssh_host || echo "components: the SSH host container does not answer (docker logs $SSH_HOST_CONTAINER)" >&2
    fi
    exec 9>&-
fi
[ -n "$(ssh_key_seen 127.0.0.1 "$SSHD_PORT")" ] \
    && echo "components: sshd on 127.0.0.1:$SSHD_PORT (root, client key $SSHD_DIR/client_ed25519)" \
    || echo "components: no loopback sshd on 127.0.0.1:$SSHD_PORT"
[ -n "$(ssh_key_seen "$SSH_HOST_IP" 22)" ] \
    && echo "components: SSH host container $SSH_HOST_CONTAINER at $SSH_HOST_IP:22 (image $SSH_HOST_IMAGE, network $SSH_NET)" \
    || echo "components: no SSH host container at $SSH_HOST_IP:22"
# MPI hosts for distributed runs across SSH hosts: three containers $MPI_CONTAINER_PREFIX-1..3 at
# ${MPI_IPS[*]} on $SSH_NET (hostnames mpi-1..3), from the image $MPI_IMAGE built offline
# from this machine's packages, so they run the same Open MPI as this machine (openmpi-bin, installed
# here too), with mpi4py in their system Python. Root logs in with the client key of the SSH hosts;
# the nodes reach each other as root with their own key pair (/root/.ssh/id_ed25519 in the image,
# host keys not checked for 172.28.0.*) so mpirun on one node starts ranks on the others over SSH.
# State (baked host key, the nodes' key pair, the mpi4py wheel) in $MPI_DIR. Rebuilt when the keys,
# the recipe, the wheel or this machine's Open MPI change; containers remade when the image changed.
MPI_DIR=$COMPONENTS_DIR/mpi-host
MPI_IMAGE=training-runs/mpi-host:3.11
MPI_CONTAINER_PREFIX=training-runs-mpi
MPI_IPS=(172.28.0.21 172.28.0.22 172.28.0.23)

mpi_host_dockerfile() {
    cat <<DOCKERFILE
FROM $1
COPY ssh_host_ed25519_key ssh_host_ed25519_key.pub id_ed25519 id_ed25519.pub authorized_keys sshd_config \\
     ssh_config_nodes.conf /tmp/ssh/
COPY wheels/ /tmp/wheels/
RUN set -e; getent passwd sshd >/dev/null || useradd -r -d /run/sshd -s /usr/sbin/nologin sshd; \\
    mkdir -p -m 755 /run/sshd /etc/ssh/ssh_config.d; mkdir -p -m 700 /root/.ssh; \\
    install -m 600 /tmp/ssh/ssh_host_ed25519_key /etc/ssh/; install -m 644 /tmp/ssh/ssh_host_ed25519_key.pub /etc/ssh/; \\
    install -m 600 /tmp/ssh/id_ed25519 /root/.ssh/; install -m 644 /tmp/ssh/id_ed25519.pub /root/.ssh/; \\
    install -m 600 /tmp/ssh/authorized_keys /root/.ssh/authorized_keys; \\
    install -m 644 /tmp/ssh/sshd_config /etc/ssh/sshd_config; \\
    install -m 644 /tmp/ssh/ssh_config_nodes.conf /etc/ssh/ssh_config.d/training-runs-nodes.conf; \\
    python3 -m pip install -q --no-index --no-cache-dir --break-system-packages /tmp/wheels/mpi4py-*.whl; \\
    rm -rf /tmp/ssh /tmp/wheels; /usr/sbin/sshd -t; python3 -c 'from mpi4py import MPI'
ENV OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl_vader_single_copy_mechanism=none
EXPOSE 22
CMD ["/usr/sbin/sshd", "-D", "-e"]
DOCKERFILE
}

mpi_host_sshd_config() {
    # SSH sessions do not inherit the image's ENV: give them (mpirun, the orted it starts) the same.
    host_sshd_config "an MPI host container" \
        "SetEnv OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl_vader_single_copy_mechanism=none"
}

mpi_host_ssh_config() {
    cat <<CFG
# Written by scripts/components.sh: the MPI test nodes reach each other (root, /root/.ssh/id_ed25519)
# without checking host keys; only for the test network.
Host 172.28.0.* mpi-1 mpi-2 mpi-3
    StrictHostKeyChecking no
    UserKnownHostsFile /dev/null
    IdentityFile /root/.ssh/id_ed25519
    LogLevel ERROR
CFG
}

# The mpi4py binary wheel for Debian's python3 (the version requirements-lock.txt pins), kept in
# $MPI_DIR/wheels: downloaded once, so rebuilding the image needs no network.
mpi4py_wheel() {
    local wheels=$MPI_DIR/wheels version spec=mpi4py wheel
    version=$(sed -n 's/^mpi4py==\([^ ;]*\).*/\1/p' requirements-lock.txt 2>/dev/null | head -1)
    [ -z "$version" ] || spec="mpi4py==$version"
    wheel=$(ls "$wheels"/mpi4py-"${version:-*}"-*.whl 2>/dev/null | head -1)
    if [ -z "$wheel" ]; then
        mkdir -p -m 755 "$wheels" && rm -f "$wheels"/mpi4py-*.whl
        /usr/bin/python3 -m pip download -q --disable-pip-version-check --only-binary=:all: --no-deps \
            -d "$wheels" "$spec" >/dev/null 2>"$MPI_DIR/pip-download.log" || return 1
        wheel=$(ls "$wheels"/mpi4py-*.whl 2>/dev/null | head -1)
    fi
    [ -n "$wheel" ] && echo "$wheel"
}

build_mpi_host_image() {  # FROZEN-INPUTS-HASH WHEEL
    local ctx rootfs=training-runs/mpi-host-rootfs:3.11 rc
    ctx=$(mktemp -d) || return 1
    if ! /usr/bin/python3 scripts/hostfs_tar.py python3 python3-venv python3-pip openssh-server openmpi-bin mpich 2>/dev/null \
            | docker import -c 'ENV LANG=C.UTF-8' - "$rootfs" >/dev/null; then
        rm -rf "$ctx"
        return 1
    fi
    cp "$MPI_DIR/host_ed25519" "$ctx/ssh_host_ed25519_key" && cp "$MPI_DIR/host_ed25519.pub" "$ctx/ssh_host_ed25519_key.pub"
    cp "$MPI_DIR/node_ed25519" "$ctx/id_ed25519" && cp "$MPI_DIR/node_ed25519.pub" "$ctx/id_ed25519.pub"
    cat "$SSHD_DIR/client_ed25519.pub" "$MPI_DIR/node_ed25519.pub" >"$ctx/authorized_keys"
    mpi_host_sshd_config >"$ctx/sshd_config" && mpi_host_ssh_config >"$ctx/ssh_config_nodes.conf"
    mkdir "$ctx/wheels" && cp "$2" "$ctx/wheels/"
    mpi_host_dockerfile "$rootfs" >"$ctx/Dockerfile"
    docker build -q --network none --label training.test-component=mpi-host --label "training.mpi-inputs=$1" \
        -t "$MPI_IMAGE" "$ctx" >"$ctx/build.log" 2>&1
    rc=$?
    [ $rc = 0 ] || cat "$ctx/build.log" >&2
    docker rmi "$rootfs" >/dev/null 2>&1  # only untags it
    rm -rf "$ctx"
    return $rc
}

start_mpi_hosts() {
    local wheel inputs image old_image= subnet original i name ip state others j seen _ torch_mount mounts
    command -v mpirun >/dev/null 2>&1 || return 1
    mkdir -p -m 755 "$MPI_DIR" || return 1
    make_key "$MPI_DIR/host_ed25519" training-runs-mpi-host && make_key "$MPI_DIR/node_ed25519" training-runs-mpi-nodes \
        || return 1
    [ -s "$SSHD_DIR/client_ed25519.pub" ] || return 1
    wheel=$(mpi4py_wheel) || { echo "components: could not download an mpi4py wheel ($MPI_DIR/pip-download.log)" >&2; return 1; }
    inputs=$( { cat "$MPI_DIR/host_ed25519.pub" "$MPI_DIR/node_ed25519.pub" "$SSHD_DIR/client_ed25519.pub"
                mpi_host_dockerfile X; mpi_host_sshd_config; mpi_host_ssh_config; basename "$wheel"
                dpkg-query -W -f '${Version}' openmpi-bin mpich python3 openssh-server; } | sha256sum | cut -c1-16)
    if [ "$(docker image inspect -f '{{index .Config.Labels "training.mpi-inputs"}}' "$MPI_IMAGE" 2>/dev/null)" != "$inputs" ]; then
        old_image=$(docker image inspect -f '{{.Id}}' "$MPI_IMAGE" 2>/dev/null)
        build_mpi_host_image "$inputs" "$wheel" || { echo "components: could not build $MPI_IMAGE" >&2; return 1; }
    fi
    image=$(docker image inspect -f '{{.Id}}' "$MPI_IMAGE") || return 1
    subnet=$(docker network inspect -f '{{range .IPAM.Config}}{{.Subnet}}{{end}}' "$SSH_NET" 2>/dev/null)
    if [ -z "$subnet" ]; then
        docker network create --driver bridge --subnet "$SSH_NET_SUBNET" --label training.test-component=network \
            "$SSH_NET" >/dev/null || return 1
    elif [ "$subnet" != "$SSH_NET_SUBNET" ]; then
        echo "components: docker network $SSH_NET has subnet $subnet, not $SSH_NET_SUBNET" >&2
        return 1
    fi
    # The PyTorch venv (same Debian Python as the image) is shared read-only: /opt/torch-venv on every node.
    torch_mount=no; [ -x "$TORCH_VENV/bin/python" ] && torch_mount=yes
    for i in 1 2 3; do
        name=$MPI_CONTAINER_PREFIX-$i ip=${MPI_IPS[$((i - 1))]}
        state=$(docker inspect -f '{{.State.Running}} {{.Image}} {{index .Config.Labels "training.test-component"}}' \
            "$name" 2>/dev/null)
        if [ -n "$state" ] && [ "${state##* }" != mpi-host ]; then
            echo "components: a container named $name exists that this script did not make" >&2
            return 1
        fi
        if [ -n "$state" ] && { [ "$(echo "$state" | cut -d' ' -f2)" != "$image" ] || \
                [ "$(docker inspect -f '{{index .Config.Labels "training.torch-venv"}}' "$name")" != "$torch_mount" ]; }; then
            docker rm -f "$name" >/dev/null && state=
        fi
        if [ -z "$state" ]; then
            others=()
            for j in 1 2 3; do [ "$j" = "$i" ] || others+=(--add-host "mpi-$j:${MPI_IPS[$((j - 1))]}"); done
            mounts=(); [ "$torch_mount" = yes ] && mounts=(-v "$TORCH_VENV:/opt/torch-venv:ro")
            docker run -d --name "$name" --hostname "mpi-$i" --network "$SSH_NET" --ip "$ip" "${others[@]}" \
                "${mounts[@]}" --label training.torch-venv="$torch_mount" \
                --label training.test-component=mpi-host --restart unless-stopped "$MPI_IMAGE" >/dev/null || return 1
        elif [ "${state%% *}" != true ]; then
            docker start "$name" >/dev/null || return 1
        fi
    done
    [ -z "$old_image" ] || [ "$old_image" = "$image" ] || docker rmi "$old_image" >/dev/null 2>&1
    original=$(pub_key "$MPI_DIR/host_ed25519.pub")
    for ip in "${MPI_IPS[@]}"; do
        seen=
        for _ in $(seq 100); do seen=$(ssh_key_seen "$ip" 22) && [ -n "$seen" ] && break; sleep 0.1; done
        [ "$seen" = "$original" ] || return 1
    done
}

# --- PyTorch (CPU) for torchrun tests: its own venv, from the wheel this kind of machine keeps on disk ---
TORCH_VENV=${TRAINING_RUNS_TORCH_VENV:-$COMPONENTS_DIR/torch-venv}
TORCH_VERSION=2.13.0
if have_root && ! "$TORCH_VENV/bin/python" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" \
        >/dev/null 2>&1; then
    links=(); [ -d /opt/wheels ] && links=(--find-links /opt/wheels)
    rm -rf "$TORCH_VENV.tmp" && /usr/bin/python3 -m venv "$TORCH_VENV.tmp" \
        && "$TORCH_VENV.tmp/bin/python" -m pip install -q "${links[@]}" "torch==$TORCH_VERSION" numpy >/tmp/torch-venv.log 2>&1 \
        && rm -rf "$TORCH_VENV" && mv "$TORCH_VENV.tmp" "$TORCH_VENV" \
        || echo "components: installing torch $TORCH_VERSION failed (see /tmp/torch-venv.log)" >&2
fi
"$TORCH_VENV/bin/python" -c "import torch" >/dev/null 2>&1 \
    && echo "components: torch $TORCH_VERSION (CPU) in $TORCH_VENV" || echo "components: no torch venv"

if have_root && command -v mpirun >/dev/null 2>&1 && [ -s "$SSHD_DIR/client_ed25519.pub" ] && docker info >/dev/null 2>&1; then
    exec 9>"$COMPONENTS_DIR/.mpi.lock" && flock -w 300 9  # one run at a time sets the MPI hosts up
    start_mpi_hosts || echo "components: the MPI host containers do not all answer (docker logs $MPI_CONTAINER_PREFIX-N)" >&2
    exec 9>&-
fi
mpi_up=1
for ip in "${MPI_IPS[@]}"; do [ -n "$(ssh_key_seen "$ip" 22)" ] || { mpi_up=; break; }; done
command -v mpirun >/dev/null 2>&1 && echo "components: $(mpirun --version 2>/dev/null | head -1) on this machine" \
    || echo "components: no mpirun on this machine"
[ -n "$mpi_up" ] \
    && echo "components: MPI hosts $MPI_CONTAINER_PREFIX-1..3 at ${MPI_IPS[*]}:22 (image $MPI_IMAGE, hostnames mpi-1..3)" \
    || echo "components: no MPI host containers at ${MPI_IPS[*]}"

# --- A Slurm cluster (controller + login node, two compute nodes, a shared folder): scripts/slurm_cluster.sh ---
source scripts/slurm_cluster.sh
if have_root && [ -s "$SSHD_DIR/client_ed25519.pub" ] && docker info >/dev/null 2>&1 && command -v slurmctld >/dev/null; then
    exec 9>"$COMPONENTS_DIR/.slurm.lock" && flock -w 300 9  # one run at a time sets the cluster up
    start_slurm_cluster || echo "components: the Slurm cluster is not up (docker logs $SLURM_PREFIX-ctl)" >&2
    exec 9>&-
fi
slurm_cluster_up \
    && echo "components: Slurm cluster: login node $SLURM_CTL_IP:22 (slurmctld, slurmdbd), nodes slurm-node-1..2, /shared = $SLURM_SHARED" \
    || echo "components: no Slurm cluster"

# --- An S3 server (Ceph's RADOS Gateway on 127.0.0.1, objects in memory): scripts/s3_server.sh ---
source scripts/s3_server.sh
if have_root && command -v radosgw >/dev/null; then
    exec 9>"$COMPONENTS_DIR/.s3.lock" && flock -w 300 9  # one run at a time starts it
    start_s3_server || echo "components: the S3 server did not start (logs in $S3_DIR/log)" >&2
    exec 9>&-
fi
s3_server_up && echo "components: S3 server (Ceph RGW $(radosgw --version 2>/dev/null | awk '{print $3}')) at $S3_ENDPOINT" \
    || echo "components: no S3 server"

exit 0
