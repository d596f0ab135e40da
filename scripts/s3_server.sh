# shellcheck shell=bash
# A real S3 server for the data tests, sourced by scripts/components.sh: Ceph's RADOS Gateway from
# Debian's packages (radosgw, ceph-mon, ceph-osd), one monitor and one in-memory OSD on 127.0.0.1,
# the gateway on $S3_ENDPOINT. It checks SigV4 signatures (a wrong secret is refused), does
# multipart uploads and ETags as S3 does; it is not an emulator. State under $S3_DIR (in memory:
# the objects are gone when it stops). The test user's keys are below (a server on loopback only).
S3_DIR=$COMPONENTS_DIR/s3
S3_PORT=7480
S3_ENDPOINT=http://127.0.0.1:$S3_PORT
S3_ACCESS_KEY=training-runs-test
S3_SECRET_KEY=training-runs-test-secret

s3_server_up() {
    [ -s "$S3_DIR/ceph.conf" ] || return 1
    curl -s -o /dev/null --max-time 3 "$S3_ENDPOINT/" || return 1
    timeout 20 radosgw-admin -c "$S3_DIR/ceph.conf" user info --uid=test >/dev/null 2>&1
}

stop_s3_server() {
    local pidfile
    for pidfile in "$S3_DIR"/run/*.pid; do
        [ -s "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null
    done
    pkill -f "ceph-.* -c $S3_DIR/ceph.conf" 2>/dev/null
    pkill -f "radosgw -c $S3_DIR/ceph.conf" 2>/dev/null
    for _ in $(seq 40); do pgrep -f "$S3_DIR/ceph.conf" >/dev/null || return 0; sleep 0.25; done
    pkill -9 -f "$S3_DIR/ceph.conf" 2>/dev/null
    return 0
}

# The daemons are started with fd 9 closed: components.sh holds its lock there, and a daemon keeping
# it would make the next components.sh wait for the lock as long as the server runs.
start_s3_server() {
    s3_server_up && return 0
    stop_s3_server
    local fsid osd_uuid c
    rm -rf "$S3_DIR" && mkdir -p "$S3_DIR"/{mon.a,osd.0,run,log} || return 1
    fsid=$(cat /proc/sys/kernel/random/uuid)
    cat >"$S3_DIR/ceph.conf" <<CONF
[global]
fsid = $fsid
mon host = [v2:127.0.0.1:3300,v1:127.0.0.1:6789]
public addr = 127.0.0.1
# daemons (radosgw) ask the monitor for "secure" mode, which auth=none cannot offer
ms mon client mode = crc secure
auth cluster required = none
auth service required = none
auth client required = none
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
mon allow pool size one = true
mon max pg per osd = 1000
osd crush chooseleaf type = 0
osd objectstore = memstore
memstore device bytes = 3221225472
run dir = $S3_DIR/run
log file = $S3_DIR/log/\$name.log
admin socket = $S3_DIR/run/\$name.asok
pid file = $S3_DIR/run/\$name.pid
mon data = $S3_DIR/mon.\$id
osd data = $S3_DIR/osd.\$id
mon warn on pool no redundancy = false
# the monitor refuses to start when its disk has under 5% free; its data here is a few MiB
mon data avail crit = 0
mon data avail warn = 0
[client.rgw]
rgw frontends = beast endpoint=127.0.0.1:$S3_PORT
CONF
    c="-c $S3_DIR/ceph.conf"
    monmaptool --create --fsid "$fsid" --addv a '[v2:127.0.0.1:3300,v1:127.0.0.1:6789]' "$S3_DIR/monmap" >/dev/null \
        && ceph-mon $c --mkfs -i a --monmap "$S3_DIR/monmap" && ceph-mon $c -i a 9>&- || return 1
    osd_uuid=$(cat /proc/sys/kernel/random/uuid)
    timeout 60 ceph $c osd new "$osd_uuid" >/dev/null && ceph-osd $c -i 0 --mkfs --osd-uuid "$osd_uuid" 2>/dev/null \
        && ceph-osd $c -i 0 2>/dev/null 9>&- && radosgw $c -n client.rgw 2>/dev/null 9>&- || return 1
    for _ in $(seq 240); do curl -s -o /dev/null --max-time 2 "$S3_ENDPOINT/" && break; sleep 0.5; done
    timeout 60 radosgw-admin $c user create --uid=test --display-name=test --access-key="$S3_ACCESS_KEY" \
        --secret-key="$S3_SECRET_KEY" >/dev/null || return 1
    s3_server_up
}
