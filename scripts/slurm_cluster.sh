# shellcheck shell=bash
# A real Slurm cluster for the Slurm target's tests, sourced by scripts/components.sh (it uses that
# script's helpers: make_key, host_sshd_config, ssh_key_seen, pub_key, $SSH_NET, $SSHD_DIR).
#
# Built offline from this machine's Debian packages (slurm-wlm 22.05, munge, MariaDB), like the
# other test hosts, on the docker network $SSH_NET:
#  * $SLURM_PREFIX-ctl at $SLURM_CTL_IP (hostname slurm-ctl): slurmctld, slurmdbd on MariaDB (so
#    sacct works), munged, and sshd: the login node root reaches with the tests' client key;
#  * $SLURM_PREFIX-node-1..2 at ${SLURM_NODE_IPS[*]} (hostnames slurm-node-1..2): slurmd, munged;
#  * one folder of this machine, $SLURM_SHARED, mounted at /shared on all three: the cluster's
#    shared filesystem (the tests read it directly too);
#  * partitions `main` (both nodes, the default) and `small` (slurm-node-1 alone, one node per job,
#    to make jobs queue); memory is a consumable resource and jobs over their --mem are killed
#    (OUT_OF_MEMORY), without cgroups (containers have none to give);
#  * srun starts MPI ranks through PMIx (MpiDefault=pmix: Debian's Open MPI speaks PMIx, not PMI-2;
#    Slurm's plugin opens libpmix.so, which only the -dev package links: the image makes the link);
#  * mpi4py in the system Python (the MPI hosts' wheel), and the PyTorch venv read-only at
#    /opt/torch-venv when there is one (as on the MPI hosts), for the distributed runs.
# The image is rebuilt when its inputs change (packages, keys, configuration); containers are
# remade when the image changed. State (munge key, host key) in $SLURM_DIR.
SLURM_DIR=$COMPONENTS_DIR/slurm
SLURM_SHARED=$SLURM_DIR/shared
SLURM_IMAGE=training-runs/slurm-node:22.05
SLURM_PREFIX=training-runs-slurm
SLURM_CTL_IP=172.28.0.40
SLURM_NODE_IPS=(172.28.0.41 172.28.0.42)
SLURM_PACKAGES=(python3 python3-venv openssh-server slurmctld slurmd slurmdbd slurm-client munge mariadb-server
                slurm-wlm-mysql-plugin openmpi-bin)

slurm_conf() {
    cat <<CONF
# Written by scripts/components.sh: the Slurm test cluster (no cgroups, no systemd: containers).
ClusterName=training
SlurmctldHost=slurm-ctl($SLURM_CTL_IP)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=1
JobAcctGatherParams=OverMemoryKill
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=$SLURM_CTL_IP
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=200
MpiDefault=pmix
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
KillWait=5
MinJobAge=300
InactiveLimit=0
SchedulerType=sched/backfill
NodeName=slurm-node-1 NodeAddr=${SLURM_NODE_IPS[0]} CPUs=2 RealMemory=1500 State=UNKNOWN
NodeName=slurm-node-2 NodeAddr=${SLURM_NODE_IPS[1]} CPUs=2 RealMemory=1500 State=UNKNOWN
PartitionName=main Nodes=slurm-node-[1-2] Default=YES MaxTime=INFINITE State=UP
PartitionName=small Nodes=slurm-node-1 MaxNodes=1 MaxTime=INFINITE State=UP
CONF
}

slurmdbd_conf() {
    cat <<CONF
# Written by scripts/components.sh: accounting for the Slurm test cluster (MariaDB on the controller).
AuthType=auth/munge
DbdHost=slurm-ctl
DbdAddr=$SLURM_CTL_IP
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=root
StorageLoc=slurm_acct_db
PidFile=/run/slurmdbd.pid
LogFile=/var/log/slurm/slurmdbd.log
CONF
}

# The containers' first process: the daemons of the role, then sshd (controller) or slurmd (nodes)
# in the foreground.
slurm_start_script() {
    cat <<'SCRIPT'
#!/bin/sh
# Written by scripts/components.sh: starts a node of the Slurm test cluster.
set -e
role=$1
mkdir -p /run/munge /run/sshd /run/mysqld /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /var/lib/mysql
munged --force  # as root: the image has no PAM for su, and the key is root's
if [ "$role" = controller ]; then
    [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=root --datadir=/var/lib/mysql >/var/log/slurm/mariadb-install.log 2>&1
    mariadbd --user=root --datadir=/var/lib/mysql --socket=/run/mysqld/mysqld.sock --skip-networking \
        >/var/log/slurm/mariadb.log 2>&1 &
    for _ in $(seq 300); do [ -S /run/mysqld/mysqld.sock ] && break; sleep 0.1; done
    slurmdbd
    for _ in $(seq 300); do sacctmgr -n list cluster >/dev/null 2>&1 && break; sleep 0.1; done
    sacctmgr -n list cluster format=cluster | grep -qw training || sacctmgr -i add cluster training >/dev/null
    slurmctld
    exec /usr/sbin/sshd -D -e
fi
exec slurmd -D -N "$(hostname)"
SCRIPT
}

slurm_dockerfile() {
    cat <<DOCKERFILE
FROM $1
COPY ssh_host_ed25519_key ssh_host_ed25519_key.pub authorized_keys sshd_config munge.key slurm.conf slurmdbd.conf \\
     training-runs-slurm-start /tmp/setup/
COPY wheels/ /tmp/wheels/
RUN set -e; getent passwd sshd >/dev/null || useradd -r -d /run/sshd -s /usr/sbin/nologin sshd; \\
    mkdir -p -m 755 /run/sshd /etc/slurm /usr/local/sbin; mkdir -p -m 700 /root/.ssh /etc/munge; \\
    install -m 600 /tmp/setup/ssh_host_ed25519_key /etc/ssh/; install -m 644 /tmp/setup/ssh_host_ed25519_key.pub /etc/ssh/; \\
    install -m 600 /tmp/setup/authorized_keys /root/.ssh/authorized_keys; \\
    install -m 644 /tmp/setup/sshd_config /etc/ssh/sshd_config; \\
    install -m 400 /tmp/setup/munge.key /etc/munge/munge.key; \\
    install -m 644 /tmp/setup/slurm.conf /etc/slurm/slurm.conf; install -m 600 /tmp/setup/slurmdbd.conf /etc/slurm/; \\
    install -m 755 /tmp/setup/training-runs-slurm-start /usr/local/sbin/; rm -rf /tmp/setup; /usr/sbin/sshd -t; \\
    site=\$(python3 -c 'import sysconfig; print(sysconfig.get_path("purelib", "posix_local"))'); mkdir -p "\$site"; \\
    for wheel in /tmp/wheels/*.whl; do python3 -m zipfile -e "\$wheel" "\$site"; done; rm -rf /tmp/wheels; \\
    python3 -c 'import mpi4py'; \\
    ln -sf libpmix.so.2 /usr/lib/\$(uname -m)-linux-gnu/pmix2/lib/libpmix.so
ENV OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl_vader_single_copy_mechanism=none
DOCKERFILE
}

slurm_sshd_config() {
    host_sshd_config "the login node of the Slurm test cluster" \
        "SetEnv OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl_vader_single_copy_mechanism=none"
}

build_slurm_image() {  # INPUTS-HASH MPI4PY-WHEEL
    local ctx rootfs=training-runs/slurm-node-rootfs:22.05 rc
    ctx=$(mktemp -d) || return 1
    if ! /usr/bin/python3 scripts/hostfs_tar.py "${SLURM_PACKAGES[@]}" 2>/dev/null \
            | docker import -c 'ENV LANG=C.UTF-8' - "$rootfs" >/dev/null; then
        rm -rf "$ctx"
        return 1
    fi
    cp "$SLURM_DIR/host_ed25519" "$ctx/ssh_host_ed25519_key" && cp "$SLURM_DIR/host_ed25519.pub" "$ctx/ssh_host_ed25519_key.pub"
    cp "$SSHD_DIR/client_ed25519.pub" "$ctx/authorized_keys" && cp "$SLURM_DIR/munge.key" "$ctx/munge.key"
    slurm_sshd_config >"$ctx/sshd_config" && slurm_conf >"$ctx/slurm.conf" && slurmdbd_conf >"$ctx/slurmdbd.conf"
    slurm_start_script >"$ctx/training-runs-slurm-start"
    mkdir -p "$ctx/wheels" && cp "$2" "$ctx/wheels/"
    slurm_dockerfile "$rootfs" >"$ctx/Dockerfile"
    docker build -q --network none --label training.test-component=slurm --label "training.slurm-inputs=$1" \
        -t "$SLURM_IMAGE" "$ctx" >"$ctx/build.log" 2>&1
    rc=$?
    [ $rc = 0 ] || cat "$ctx/build.log" >&2
    docker rmi "$rootfs" >/dev/null 2>&1  # only untags it
    rm -rf "$ctx"
    return $rc
}

# Run (or keep) one container of the cluster: NAME HOSTNAME IP ROLE IMAGE-ID.
slurm_container() {
    local name=$1 host=$2 ip=$3 role=$4 image=$5 state torch_mount=no mounts=()
    [ -x "$TORCH_VENV/bin/python" ] && torch_mount=yes && mounts=(-v "$TORCH_VENV:/opt/torch-venv:ro")
    state=$(docker inspect -f '{{.State.Running}} {{.Image}} {{index .Config.Labels "training.torch-venv"}} {{index .Config.Labels "training.test-component"}}' \
        "$name" 2>/dev/null)
    if [ -n "$state" ] && [ "${state##* }" != slurm ]; then
        echo "components: a container named $name exists that this script did not make" >&2
        return 1
    fi
    if [ -n "$state" ] && [ "$(echo "$state" | cut -d' ' -f2-3)" != "$image $torch_mount" ]; then
        docker rm -f "$name" >/dev/null && state=
    fi
    if [ -z "$state" ]; then
        docker run -d --name "$name" --hostname "$host" --network "$SSH_NET" --ip "$ip" \
            --add-host "slurm-ctl:$SLURM_CTL_IP" --add-host "slurm-node-1:${SLURM_NODE_IPS[0]}" \
            --add-host "slurm-node-2:${SLURM_NODE_IPS[1]}" -v "$SLURM_SHARED:/shared" "${mounts[@]}" \
            --label training.test-component=slurm --label training.torch-venv="$torch_mount" --restart unless-stopped "$SLURM_IMAGE" \
            /usr/local/sbin/training-runs-slurm-start "$role" >/dev/null || return 1
    elif [ "${state%% *}" != true ]; then
        docker start "$name" >/dev/null || return 1
    fi
}

start_slurm_cluster() {
    local inputs image old_image= i seen _ wheel
    mkdir -p -m 755 "$SLURM_DIR" "$SLURM_SHARED" || return 1
    make_key "$SLURM_DIR/host_ed25519" training-runs-slurm-login || return 1
    [ -s "$SLURM_DIR/munge.key" ] || { head -c 1024 /dev/urandom >"$SLURM_DIR/munge.key" && chmod 600 "$SLURM_DIR/munge.key"; } \
        || return 1
    [ -s "$SSHD_DIR/client_ed25519.pub" ] || return 1
    wheel=$(mpi4py_wheel) || { echo "components: could not download an mpi4py wheel ($MPI_DIR/pip-download.log)" >&2; return 1; }
    inputs=$( { cat "$SLURM_DIR/host_ed25519.pub" "$SSHD_DIR/client_ed25519.pub" "$SLURM_DIR/munge.key"
                basename "$wheel"
                slurm_dockerfile X; slurm_sshd_config; slurm_conf; slurmdbd_conf; slurm_start_script
                dpkg-query -W -f '${Version}\n' "${SLURM_PACKAGES[@]}"; } | sha256sum | cut -c1-16)
    if [ "$(docker image inspect -f '{{index .Config.Labels "training.slurm-inputs"}}' "$SLURM_IMAGE" 2>/dev/null)" != "$inputs" ]; then
        old_image=$(docker image inspect -f '{{.Id}}' "$SLURM_IMAGE" 2>/dev/null)
        build_slurm_image "$inputs" "$wheel" || { echo "components: could not build $SLURM_IMAGE" >&2; return 1; }
    fi
    image=$(docker image inspect -f '{{.Id}}' "$SLURM_IMAGE") || return 1
    slurm_container "$SLURM_PREFIX-ctl" slurm-ctl "$SLURM_CTL_IP" controller "$image" || return 1
    for i in 1 2; do
        slurm_container "$SLURM_PREFIX-node-$i" "slurm-node-$i" "${SLURM_NODE_IPS[$((i - 1))]}" node "$image" || return 1
    done
    [ -z "$old_image" ] || [ "$old_image" = "$image" ] || docker rmi "$old_image" >/dev/null 2>&1
    for _ in $(seq 300); do seen=$(ssh_key_seen "$SLURM_CTL_IP" 22) && [ -n "$seen" ] && break; sleep 0.1; done
    [ "$seen" = "$(pub_key "$SLURM_DIR/host_ed25519.pub")" ] || return 1
    # Both nodes idle (they register within seconds of slurmctld and slurmd starting).
    for _ in $(seq 300); do
        [ "$(docker exec "$SLURM_PREFIX-ctl" sinfo -h -p main -t idle -o '%D' 2>/dev/null)" = 2 ] && return 0
        sleep 0.2
    done
    return 1
}

slurm_cluster_up() {
    [ "$(docker exec "$SLURM_PREFIX-ctl" sinfo -h -p main -t idle,mix,alloc -o '%D' 2>/dev/null)" = 2 ] \
        && [ -n "$(ssh_key_seen "$SLURM_CTL_IP" 22)" ]
}
