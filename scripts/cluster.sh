#!/usr/bin/env bash
# The multi-worker deployment of "Running at scale" (README), started for real on this machine:
#
#   PostgreSQL      Airflow's metadata database and MLflow's backend store (two databases, two roles)
#   Redis           the Celery broker
#   mlflow server   on PostgreSQL, proxying artifacts (--artifacts-destination), behind MLflow's
#                   basic-auth app; the provider reaches it through an `mlflow` connection
#   Airflow 3       scheduler, dag-processor, api-server, triggerer (CeleryExecutor)
#   worker-1        a Celery worker on this machine, with its own TRAINING_RUNS_HOME and HOME
#   worker-2        a Celery worker in its own container ("another machine": own filesystem,
#                   network address, hostname and process namespace); it sees this machine's
#                   Docker daemon, the SSH hosts and the servers above over the network only
#
# Both workers serve the same queue and reach the same compute targets. What is per worker: the
# snapshot store, the environment cache, local job folders. What is shared: the tracking server,
# the Airflow database, the targets.
#
#   scripts/cluster.sh up        start what is not running (idempotent); prints where each part listens
#   scripts/cluster.sh down      stop everything it started (the state folder stays; --purge removes it)
#   scripts/cluster.sh status    what runs, where
#   scripts/cluster.sh env       the environment for an Airflow CLI or MLflow client on this machine
#                                (eval "$(scripts/cluster.sh env)")
#   scripts/cluster.sh workers   exit status 0 when both Celery workers answer a ping
#   scripts/cluster.sh start|stop|kill|restart PART   one part: scheduler, dag-processor, api-server,
#                                triggerer, mlflow, worker-1, worker-2 (kill: SIGKILL; worker-2: its
#                                whole container, as when its machine dies)
#
# Settings (environment): TRAINING_CLUSTER_DIR (state; default /tmp/training-runs-cluster),
# TRAINING_CLUSTER_DAGS (the DAGs folder; default $TRAINING_CLUSTER_DIR/dags), TRAINING_CLUSTER_PG_DATA
# (PostgreSQL's data folder and server log; default $TRAINING_CLUSTER_DIR/postgres), the ports below,
# TRAINING_CLUSTER_WORKER2_NAME and _IP (the worker container), and TRAINING_CLUSTER_CONCURRENCY
# (task slots per worker, default 16). Needs root (PostgreSQL runs as
# the postgres user, worker-2 is a container), the packages postgresql and redis-server, the docker
# network and host image made by scripts/components.sh, and the project's .venv (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
VENV=$REPO/.venv
CLUSTER_DIR=${TRAINING_CLUSTER_DIR:-/tmp/training-runs-cluster}
DAGS=${TRAINING_CLUSTER_DAGS:-$CLUSTER_DIR/dags}
PG_DATA=${TRAINING_CLUSTER_PG_DATA:-$CLUSTER_DIR/postgres}  # the postgres user must be able to reach it
NET=training-runs-net
GATEWAY=172.28.0.1                 # this machine on the docker network: every server listens here
WORKER2_IP=${TRAINING_CLUSTER_WORKER2_IP:-172.28.0.30}
WORKER2_CONTAINER=${TRAINING_CLUSTER_WORKER2_NAME:-training-runs-worker-2}
WORKER_IMAGE=training-runs/ssh-host:3.11   # Debian's runtime libraries; Python comes from the mounted venv
PG_PORT=${TRAINING_CLUSTER_PG_PORT:-5433}
REDIS_PORT=${TRAINING_CLUSTER_REDIS_PORT:-6380}
MLFLOW_PORT=${TRAINING_CLUSTER_MLFLOW_PORT:-5080}
API_PORT=${TRAINING_CLUSTER_API_PORT:-8090}
CONCURRENCY=${TRAINING_CLUSTER_CONCURRENCY:-16}
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
PIDS=$CLUSTER_DIR/pids
LOGS=$CLUSTER_DIR/logs
SECRETS=$CLUSTER_DIR/secrets.env   # passwords and keys made at the first `up` (mode 600)
AIRFLOW_SERVICES=(scheduler dag-processor api-server triggerer)

say() { echo "cluster: $*"; }
fail() { echo "cluster: $*" >&2; exit 1; }

# ------------------------------------------------------------------------------------ state
make_secrets() {
    [ -s "$SECRETS" ] && return
    local random="$VENV/bin/python -c"
    umask 077
    {
        echo "PG_AIRFLOW_PASSWORD=$($random 'import secrets; print(secrets.token_hex(16))')"
        echo "REDIS_PASSWORD=$($random 'import secrets; print(secrets.token_hex(16))')"
        echo "PG_MLFLOW_PASSWORD=$($random 'import secrets; print(secrets.token_hex(16))')"
        echo "MLFLOW_ADMIN_PASSWORD=$($random 'import secrets; print(secrets.token_urlsafe(18))')"
        echo "MLFLOW_TRAINER_PASSWORD=$($random 'import secrets; print(secrets.token_urlsafe(18))')"
        echo "AIRFLOW_ADMIN_PASSWORD=$($random 'import secrets; print(secrets.token_urlsafe(18))')"
        echo "FERNET_KEY=$($random 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')"
        echo "MLFLOW_FLASK_SECRET=$($random 'import secrets; print(secrets.token_urlsafe(32))')"
        echo "JWT_SECRET=$($random 'import secrets; print(secrets.token_urlsafe(32))')"
        echo "API_SECRET_KEY=$($random 'import secrets; print(secrets.token_urlsafe(32))')"
    } >"$SECRETS.tmp"
    mv "$SECRETS.tmp" "$SECRETS"
    umask 022
}

# The Airflow settings every component shares (host processes and the worker container alike).
airflow_env() {
    # shellcheck disable=SC1090
    . "$SECRETS"
    cat <<EOF
AIRFLOW__CORE__EXECUTOR=CeleryExecutor
AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=postgresql+psycopg2://airflow:$PG_AIRFLOW_PASSWORD@$GATEWAY:$PG_PORT/airflow
AIRFLOW__CELERY__BROKER_URL=redis://:$REDIS_PASSWORD@$GATEWAY:$REDIS_PORT/0
AIRFLOW__CELERY__RESULT_BACKEND=db+postgresql+psycopg2://airflow:$PG_AIRFLOW_PASSWORD@$GATEWAY:$PG_PORT/airflow
AIRFLOW__CELERY__WORKER_CONCURRENCY=$CONCURRENCY
AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS=airflow_provider.celery_config.CELERY_CONFIG
AIRFLOW__CORE__DAGS_FOLDER=$DAGS
AIRFLOW__CORE__LOAD_EXAMPLES=False
AIRFLOW__CORE__FERNET_KEY=$FERNET_KEY
AIRFLOW__DATABASE__SQL_ALCHEMY_POOL_SIZE=20
AIRFLOW__DATABASE__SQL_ALCHEMY_MAX_OVERFLOW=30
AIRFLOW__CORE__PARALLELISM=128
AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG=128
AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=admin:admin
AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE=$CLUSTER_DIR/airflow-passwords.json
AIRFLOW__CORE__EXECUTION_API_SERVER_URL=http://$GATEWAY:$API_PORT/execution/
AIRFLOW__API__HOST=$GATEWAY
AIRFLOW__API__PORT=$API_PORT
AIRFLOW__API__SECRET_KEY=$API_SECRET_KEY
AIRFLOW__API_AUTH__JWT_SECRET=$JWT_SECRET
AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT=30
AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL=5
AIRFLOW__LOGGING__LOGGING_LEVEL=INFO
MLFLOW_DISABLE_TELEMETRY=true
PYTHONDONTWRITEBYTECODE=1
EOF
}

write_env_files() {
    mkdir -p "$CLUSTER_DIR" "$PIDS" "$LOGS" "$DAGS"
    chmod 711 "$CLUSTER_DIR"  # others may pass through (the postgres user to its data folder), not list
    make_secrets
    umask 077
    airflow_env >"$CLUSTER_DIR/airflow.env"
    umask 022
    # shellcheck disable=SC1090
    . "$SECRETS"
    # The simple auth manager's password file, so the admin password is known before the API starts.
    printf '{"admin": "%s"}\n' "$AIRFLOW_ADMIN_PASSWORD" >"$CLUSTER_DIR/airflow-passwords.json"
    chmod 600 "$CLUSTER_DIR/airflow-passwords.json"
}

# ------------------------------------------------------------------------------- processes
alive() { [ -s "$PIDS/$1" ] && kill -0 "$(cat "$PIDS/$1")" 2>/dev/null; }

# start NAME COMMAND...: COMMAND in its own session, output in logs/NAME.log, pid in pids/NAME.
start() {
    local name=$1; shift
    alive "$name" && return 0
    setsid "$@" >>"$LOGS/$name.log" 2>&1 </dev/null &
    echo $! >"$PIDS/$name"
}

# The process PID and all its descendants (a Celery worker's task processes start sessions of their own).
tree() {
    local pid=$1 child
    echo "$pid"
    for child in $(ps -o pid= --ppid "$pid" 2>/dev/null); do tree "$child"; done
}

# stop NAME [SIGNAL]: SIGTERM (or SIGNAL) to its whole process tree, SIGKILL to what is left after 20 s.
stop() {
    local name=$1 signal=${2:-TERM} pid pids
    [ -s "$PIDS/$name" ] || return 0
    pid=$(cat "$PIDS/$name")
    if kill -0 "$pid" 2>/dev/null; then
        pids=$(tree "$pid")
        kill "-$signal" -- "-$pid" 2>/dev/null || true
        kill "-$signal" $pids 2>/dev/null || true
        for _ in $(seq 200); do kill -0 $pids 2>/dev/null || break; sleep 0.1; done
        kill -KILL -- "-$pid" 2>/dev/null || true
        kill -KILL $pids 2>/dev/null || true
    fi
    rm -f "$PIDS/$name"
}

wait_for() {  # DESCRIPTION SECONDS COMMAND...: until COMMAND succeeds; fails early when a process named
    local what=$1 seconds=$2; shift 2  # by $WATCHED (pids/ names) has died
    local deadline=$((SECONDS + seconds)) name
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -lt $deadline ] || fail "$what did not come up within ${seconds}s (logs in $LOGS)"
        for name in ${WATCHED:-}; do
            alive "$name" || fail "$name exited while waiting for $what (see $LOGS/$name.log)"
        done
        sleep 0.2
    done
}

# ------------------------------------------------------------------------------ PostgreSQL
pg_up() { "$PG_BIN/pg_isready" -q -h "$GATEWAY" -p "$PG_PORT"; }
psql_admin() { su postgres -s /bin/sh -c "$PG_BIN/psql -q -v ON_ERROR_STOP=1 -h '$PG_DATA' -p $PG_PORT -d postgres $*"; }

start_postgres() {
    local data=$PG_DATA
    if [ ! -s "$data/PG_VERSION" ]; then
        mkdir -p "$data" && chown postgres: "$data" && chmod 700 "$data"
        su postgres -s /bin/sh -c "$PG_BIN/initdb -D '$data' --auth-local=trust --auth-host=scram-sha-256" \
            >"$LOGS/postgres-initdb.log" 2>&1 || fail "initdb failed ($LOGS/postgres-initdb.log)"
        # Workers connect over the docker network: the worker container from its own address.
        echo "host all all 172.28.0.0/24 scram-sha-256" >>"$data/pg_hba.conf"
    fi
    if ! pg_up; then
        su postgres -s /bin/sh -c "$PG_BIN/pg_ctl -D '$data' -w -l '$data/server.log' \
            -o \"-p $PG_PORT -k '$data' -c listen_addresses=127.0.0.1,$GATEWAY -c max_connections=800\" start" \
            >/dev/null || fail "PostgreSQL did not start ($data/server.log)"
    fi
    wait_for PostgreSQL 30 pg_up
    # shellcheck disable=SC1090
    . "$SECRETS"
    local role
    for role in airflow mlflow; do
        local password_var="PG_${role^^}_PASSWORD"
        if [ -z "$(psql_admin "-tAc \"SELECT 1 FROM pg_roles WHERE rolname='$role'\"")" ]; then
            psql_admin "-c \"CREATE ROLE $role LOGIN PASSWORD '${!password_var}'\"" \
                && psql_admin "-c \"CREATE DATABASE $role OWNER $role\"" || fail "could not create the $role database"
        fi
    done
    if [ -z "$(psql_admin "-tAc \"SELECT 1 FROM pg_database WHERE datname='mlflow_auth'\"")" ]; then
        psql_admin "-c \"CREATE DATABASE mlflow_auth OWNER mlflow\"" || fail "could not create the mlflow_auth database"
    fi
}

stop_postgres() {
    [ -s "$PG_DATA/postmaster.pid" ] || return 0
    su postgres -s /bin/sh -c "$PG_BIN/pg_ctl -D '$PG_DATA' -m fast -w stop" >/dev/null 2>&1 || true
}

# ----------------------------------------------------------------------------------- Redis
redis_cli() { [ -s "$SECRETS" ] && (. "$SECRETS" && REDISCLI_AUTH=$REDIS_PASSWORD redis-cli -h "$GATEWAY" -p "$REDIS_PORT" "$@"); }
redis_up() { redis_cli ping 2>/dev/null | grep -q PONG; }
start_redis() {
    redis_up && return 0
    # shellcheck disable=SC1090
    . "$SECRETS"
    umask 077
    printf 'requirepass %s\n' "$REDIS_PASSWORD" >"$CLUSTER_DIR/redis.conf"
    umask 022
    redis-server "$CLUSTER_DIR/redis.conf" --bind "127.0.0.1 $GATEWAY" --port "$REDIS_PORT" --daemonize yes \
        --save '' --appendonly no \
        --pidfile "$PIDS/redis" --logfile "$LOGS/redis.log" --dir "$CLUSTER_DIR" >/dev/null
    wait_for Redis 20 redis_up
}
stop_redis() { redis_up && redis_cli shutdown nosave >/dev/null 2>&1 || true; rm -f "$PIDS/redis"; }

# --------------------------------------------------------------------------- MLflow server
mlflow_up() { "$VENV/bin/python" -c "import urllib.request as u; u.urlopen('http://$GATEWAY:$MLFLOW_PORT/health', timeout=2)"; }
start_mlflow() {
    alive mlflow && return 0
    # shellcheck disable=SC1090
    . "$SECRETS"
    umask 077
    cat >"$CLUSTER_DIR/mlflow-auth.ini" <<EOF
[mlflow]
default_permission = READ
database_uri = postgresql+psycopg2://mlflow:$PG_MLFLOW_PASSWORD@$GATEWAY:$PG_PORT/mlflow_auth
admin_username = admin
admin_password = $MLFLOW_ADMIN_PASSWORD
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
# Every request carries the password, and checking it against its stored hash (scrypt) costs ~0.1 s of
# CPU by design: with caching off (MLflow's default) that check, not the tracking work, dominates a
# busy server. A credential checked once is trusted for two minutes (per server worker); a changed or
# revoked password takes at most that long to stop working.
auth_cache_ttl_seconds = 120
EOF
    umask 022
    mkdir -p "$CLUSTER_DIR/mlflow-artifacts"
    # Many runs at once: a database pool per server worker larger than SQLAlchemy's 5 + 10 (exhausted, the
    # server answers 400), and workers given a minute to answer the health check of uvicorn's supervisor
    # (one busy for 5 s is killed, cutting every answer it was sending).
    start mlflow env MLFLOW_AUTH_CONFIG_PATH="$CLUSTER_DIR/mlflow-auth.ini" \
        MLFLOW_FLASK_SERVER_SECRET_KEY="$MLFLOW_FLASK_SECRET" MLFLOW_DISABLE_TELEMETRY=true \
        MLFLOW_SQLALCHEMYSTORE_POOL_SIZE=20 MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW=30 \
        "$VENV/bin/mlflow" server --app-name basic-auth --host "$GATEWAY" --port "$MLFLOW_PORT" --workers 2 \
        --uvicorn-opts "--timeout-worker-healthcheck 60" \
        --allowed-hosts "$GATEWAY:$MLFLOW_PORT,127.0.0.1:$MLFLOW_PORT,localhost:$MLFLOW_PORT" \
        --backend-store-uri "postgresql+psycopg2://mlflow:$PG_MLFLOW_PASSWORD@$GATEWAY:$PG_PORT/mlflow" \
        --artifacts-destination "$CLUSTER_DIR/mlflow-artifacts"
    WATCHED=mlflow wait_for "mlflow server" 180 mlflow_up
    # The provider logs in as "trainer", an ordinary user (it owns the experiments it creates).
    "$VENV/bin/python" - "$GATEWAY:$MLFLOW_PORT" "$MLFLOW_ADMIN_PASSWORD" "$MLFLOW_TRAINER_PASSWORD" <<'EOF'
import base64, json, sys, urllib.error, urllib.request
address, admin_password, trainer_password = sys.argv[1:]
auth = base64.b64encode(f"admin:{admin_password}".encode()).decode()
request = urllib.request.Request(f"http://{address}/api/2.0/mlflow/users/create", method="POST",
                                 data=json.dumps({"username": "trainer", "password": trainer_password}).encode(),
                                 headers={"Authorization": f"Basic {auth}", "Content-Type": "application/json"})
try:
    urllib.request.urlopen(request, timeout=30)
except urllib.error.HTTPError as error:
    if error.code != 400 or b"already exists" not in error.read():
        raise
EOF
}

# ---------------------------------------------------------------------------------- Airflow
airflow_run() {  # the Airflow CLI with the cluster's settings, as a host component
    env $(grep -v '^#' "$CLUSTER_DIR/airflow.env" | xargs) AIRFLOW_HOME="$CLUSTER_DIR/airflow" \
        PATH="$VENV/bin:$PATH" "$@"
}

api_up() { "$VENV/bin/python" -c "import urllib.request as u; u.urlopen('http://$GATEWAY:$API_PORT/api/v2/monitor/health', timeout=2)"; }

start_airflow() {
    mkdir -p "$CLUSTER_DIR/airflow"
    if [ ! -e "$CLUSTER_DIR/airflow/.migrated" ]; then
        airflow_run airflow db migrate >"$LOGS/airflow-db-migrate.log" 2>&1 \
            || fail "airflow db migrate failed ($LOGS/airflow-db-migrate.log)"
        touch "$CLUSTER_DIR/airflow/.migrated"
    fi
    add_connections
    local service
    for service in "${AIRFLOW_SERVICES[@]}"; do start_airflow_service "$service"; done
    WATCHED=api-server wait_for "the Airflow API server" 180 api_up
}

start_airflow_service() {  # NAME: scheduler, dag-processor, api-server or triggerer
    start "$1" env $(grep -v '^#' "$CLUSTER_DIR/airflow.env" | xargs) AIRFLOW_HOME="$CLUSTER_DIR/airflow" \
        PATH="$VENV/bin:$PATH" "$VENV/bin/airflow" "$1"
}

# The connections the example DAG of the scale section uses (stored in the database, encrypted with
# the Fernet key): the tracking server with the trainer's credentials, and one per compute target.
add_connections() {
    # shellcheck disable=SC1090
    . "$SECRETS"
    local components=/var/lib/training-runs-components
    "$VENV/bin/python" - "$CLUSTER_DIR/connections.json" "$GATEWAY" "$MLFLOW_PORT" "$MLFLOW_TRAINER_PASSWORD" \
        "$components/sshd" "$components/ssh-host/host_ed25519.pub" <<'EOF'
import json, pathlib, sys
path, gateway, port, password, ssh_dir, host_key_path = sys.argv[1:]
host_key_file = pathlib.Path(host_key_path)
connections = {
    "mlflow_cluster": {"conn_type": "mlflow", "host": f"http://{gateway}:{port}", "login": "trainer",
                       "password": password},
    "training_local": {"conn_type": "training_local"},
    "training_docker": {"conn_type": "training_docker", "host": "unix:///var/run/docker.sock",
                        "extra": json.dumps({"image": "training-runs/python:3.11"})},
}
if host_key_file.exists():
    host_key = " ".join(host_key_file.read_text().split()[:2])
    connections["training_ssh"] = {
        "conn_type": "training_ssh", "host": "172.28.0.10", "port": 22, "login": "root",
        "extra": json.dumps({"key_file": f"{ssh_dir}/client_ed25519", "host_key": host_key,
                             "work_root": "/tmp/training-runs-cluster"})}
pathlib.Path(path).write_text(json.dumps(connections, indent=1))
pathlib.Path(path).chmod(0o600)
EOF
    airflow_run airflow connections import --overwrite "$CLUSTER_DIR/connections.json" \
        >"$LOGS/airflow-connections.log" 2>&1 || fail "could not add the connections ($LOGS/airflow-connections.log)"
}

# ---------------------------------------------------------------------------------- workers
worker1_up() { alive worker-1; }
start_worker1() {
    local home=$CLUSTER_DIR/worker-1
    mkdir -p "$home/home" "$home/training_runs" "$home/airflow"
    start worker-1 env $(grep -v '^#' "$CLUSTER_DIR/airflow.env" | xargs) AIRFLOW_HOME="$home/airflow" \
        HOME="$home/home" TRAINING_RUNS_HOME="$home/training_runs" PATH="$VENV/bin:$PATH" \
        AIRFLOW__LOGGING__BASE_LOG_FOLDER="$LOGS/worker-1-tasks" \
        "$VENV/bin/airflow" celery worker --celery-hostname "worker-1@%h" --concurrency "$CONCURRENCY"
}

worker2_running() { [ "$(docker inspect -f '{{.State.Running}}' "$WORKER2_CONTAINER" 2>/dev/null)" = true ]; }
start_worker2() {
    worker2_running && return 0
    docker rm -f "$WORKER2_CONTAINER" >/dev/null 2>&1 || true
    local python_home ssh_dir=/var/lib/training-runs-components/sshd
    python_home=$("$VENV/bin/python" -c 'import sys; print(sys.base_prefix)')
    mkdir -p "$LOGS/worker-2-tasks"
    # Read-only: the code (repository with its .venv, the interpreter it links to), the DAGs and the SSH
    # client key; read-write: the Docker daemon's socket and the task-log folder (Airflow's, not the
    # provider's state). Everything else, TRAINING_RUNS_HOME and HOME included, is the container's own.
    docker run -d --name "$WORKER2_CONTAINER" --hostname worker-2 --network "$NET" --ip "$WORKER2_IP" \
        --label training.test-component=cluster-worker \
        --env-file "$CLUSTER_DIR/airflow.env" \
        -e AIRFLOW_HOME=/opt/airflow -e HOME=/root -e TRAINING_RUNS_HOME=/var/lib/training-runs \
        -e PATH="$VENV/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
        -e AIRFLOW__LOGGING__BASE_LOG_FOLDER="$LOGS/worker-2-tasks" \
        -v "$REPO:$REPO:ro" -v "$python_home:$python_home:ro" -v "$DAGS:$DAGS:ro" \
        -v "$ssh_dir:$ssh_dir:ro" -v /var/run/docker.sock:/var/run/docker.sock \
        -v "$LOGS/worker-2-tasks:$LOGS/worker-2-tasks" \
        --entrypoint "$VENV/bin/airflow" "$WORKER_IMAGE" \
        celery worker --celery-hostname "worker-2@%h" --concurrency "$CONCURRENCY" >/dev/null \
        || fail "could not start the worker container $WORKER2_CONTAINER"
}

workers_registered() {  # both workers answer Celery's ping
    local answer
    answer=$(airflow_run "$VENV/bin/celery" --app airflow.providers.celery.executors.celery_executor.app \
        inspect ping --timeout 3 2>/dev/null) || return 1
    grep -q "worker-1@" <<<"$answer" && grep -q "worker-2@" <<<"$answer"
}

start_service() {  # NAME
    case "$1" in
        mlflow) start_mlflow ;;
        worker-1) start_worker1 ;;
        worker-2) start_worker2 ;;
        scheduler|dag-processor|api-server|triggerer) start_airflow_service "$1" ;;
        *) fail "unknown part $1 (scheduler dag-processor api-server triggerer mlflow worker-1 worker-2)" ;;
    esac
}

stop_service() {  # NAME SIGNAL: TERM stops it gracefully (20 s, then KILL), KILL kills it at once
    local name=$1 signal=$2
    case "$name" in
        worker-2) if [ "$signal" = KILL ]; then docker kill "$WORKER2_CONTAINER" >/dev/null 2>&1 || true
                  else docker stop -t 20 "$WORKER2_CONTAINER" >/dev/null 2>&1 || true; fi ;;
        mlflow|worker-1|scheduler|dag-processor|api-server|triggerer)
            stop "$name" "$signal" ;;
        *) fail "unknown part $name (scheduler dag-processor api-server triggerer mlflow worker-1 worker-2)" ;;
    esac
}

# ---------------------------------------------------------------------------------- commands
up() {
    [ "$(id -u)" = 0 ] || fail "run as root (PostgreSQL runs as the postgres user; worker-2 is a container)"
    [ -n "$PG_BIN" ] || fail "PostgreSQL is not installed (apt-get install postgresql)"
    command -v redis-server >/dev/null || fail "Redis is not installed (apt-get install redis-server)"
    [ -x "$VENV/bin/airflow" ] || fail "no $VENV (run scripts/setup.sh)"
    docker network inspect "$NET" >/dev/null 2>&1 || fail "no docker network $NET (run scripts/components.sh)"
    docker image inspect "$WORKER_IMAGE" >/dev/null 2>&1 || fail "no image $WORKER_IMAGE (run scripts/components.sh)"
    write_env_files
    start_postgres
    start_redis
    start_mlflow &
    local mlflow_pid=$!
    start_airflow
    wait "$mlflow_pid" || fail "the mlflow server did not start ($LOGS/mlflow.log)"
    start_worker1
    start_worker2
    wait_for "both Celery workers" 180 workers_registered
    status
}

down() {
    docker rm -f "$WORKER2_CONTAINER" >/dev/null 2>&1 || true
    local name
    for name in worker-1 "${AIRFLOW_SERVICES[@]}" mlflow; do stop "$name"; done
    stop_redis
    stop_postgres
    if [ "${1:-}" = --purge ]; then rm -rf "$CLUSTER_DIR" "$PG_DATA"; fi
}

status() {
    local name
    say "state in $CLUSTER_DIR (passwords in $SECRETS, logs in $LOGS)"
    pg_up && say "PostgreSQL  $GATEWAY:$PG_PORT (databases airflow, mlflow, mlflow_auth)" || say "PostgreSQL  down"
    redis_up && say "Redis       $GATEWAY:$REDIS_PORT (Celery broker)" || say "Redis       down"
    alive mlflow && say "MLflow      http://$GATEWAY:$MLFLOW_PORT (basic auth; connection mlflow_cluster)" \
        || say "MLflow      down"
    alive api-server && say "Airflow     http://$GATEWAY:$API_PORT (user admin)" || say "Airflow API down"
    for name in scheduler dag-processor triggerer worker-1; do
        alive "$name" && say "$name: pid $(cat "$PIDS/$name")" || say "$name: down"
    done
    worker2_running && say "worker-2: container $WORKER2_CONTAINER at $WORKER2_IP" || say "worker-2: down"
}

client_env() {
    # shellcheck disable=SC1090
    . "$SECRETS"
    grep -v '^#' "$CLUSTER_DIR/airflow.env" | sed 's/^/export /'
    echo "export AIRFLOW_HOME=$CLUSTER_DIR/airflow PATH=$VENV/bin:\$PATH"
    echo "export MLFLOW_TRACKING_URI=http://$GATEWAY:$MLFLOW_PORT"
    echo "export MLFLOW_TRACKING_USERNAME=trainer"
    echo "export MLFLOW_TRACKING_PASSWORD=$MLFLOW_TRAINER_PASSWORD"
}

usage="usage: cluster.sh up | down [--purge] | status | env | workers | start|stop|kill|restart PART"
case "${1:-}" in
    up) up ;;
    down) shift; down "$@" ;;
    status) status ;;
    env) client_env ;;
    workers) workers_registered ;;
    start) [ $# = 2 ] || fail "$usage"; start_service "$2" ;;
    stop) [ $# = 2 ] || fail "$usage"; stop_service "$2" TERM ;;
    kill) [ $# = 2 ] || fail "$usage"; stop_service "$2" KILL ;;
    restart) [ $# = 2 ] || fail "$usage"; stop_service "$2" TERM; start_service "$2" ;;
    *) fail "$usage" ;;
esac
