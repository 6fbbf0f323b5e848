#!/usr/bin/env bash
# scripts/services.sh — run the real backing services (Kafka, a MongoDB-wire server, PostgreSQL)
# as plain processes on loopback, for machines without Docker (Debian 12; CI runs as root).
#
# Usage:
#   scripts/services.sh up       install what is missing, start PostgreSQL 15, FerretDB, Kafka,
#                                wait until each answers (idempotent: running ones are reused)
#   scripts/services.sh down     stop the processes this script started
#   scripts/services.sh status   one line per service; exit 0 if all run, 3 otherwise
#   scripts/services.sh env      print export lines: eval "$(scripts/services.sh env)"
#   scripts/services.sh stop  kafka|ferretdb|postgres   stop one service (outage tests)
#   scripts/services.sh start kafka|ferretdb|postgres   start it again (its data is kept)
#
# What runs (all on 127.0.0.1):
#   PostgreSQL 15 (Debian package, private cluster, trust auth) :PG_PORT    (5432)  db smart_city
#   FerretDB v1.24.2, SQLite backend (MongoDB wire protocol)    :MONGO_PORT (27017)
#   Apache Kafka 4.4.0 KRaft, broker+controller in one JVM      :KAFKA_PORT (9092), controller
#                                                               :KAFKA_CONTROLLER_PORT (9093)
#
# Environment:
#   SMART_CITY_CACHE  downloads and built binaries (default ${XDG_CACHE_HOME:-$HOME/.cache}/smart-city)
#   SMART_CITY_STATE  data dirs, logs (<state>/logs/*.log), pid files (default <cache>/state)
#   KAFKA_PORT, KAFKA_CONTROLLER_PORT, MONGO_PORT, PG_PORT   ports (see above)
#   SERVICES_TIMEOUT  seconds to wait for each service to answer (default 120)
#
# Needs: java 17+ (JDK, for javac) and mvn for Kafka; go for FerretDB; apt-get (as root) for
# PostgreSQL when /usr/lib/postgresql/15/bin is missing. Only package registries are used.
# Notes: FerretDB speaks the MongoDB protocol without SCRAM; connect without credentials.
# When run as root, PostgreSQL's data dir goes under the postgres user's home if that user
# cannot reach <state> (e.g. under /root); `status` shows where.
set -euo pipefail

KAFKA_VERSION=4.4.0
LOG4J_VERSION=2.25.5            # the log4j version kafka-server 4.4.0 itself depends on
DEP_PLUGIN_VERSION=3.8.1
FERRETDB_VERSION=v1.24.2
PG_BIN=/usr/lib/postgresql/15/bin

KAFKA_PORT=${KAFKA_PORT:-9092}
KAFKA_CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-9093}
MONGO_PORT=${MONGO_PORT:-27017}
PG_PORT=${PG_PORT:-5432}
TIMEOUT=${SERVICES_TIMEOUT:-120}
HOST=127.0.0.1

CACHE=${SMART_CITY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/smart-city}
STATE=${SMART_CITY_STATE:-$CACHE/state}
LOGS=$STATE/logs
RUN=$STATE/run

KAFKA_HOME=$CACHE/kafka-$KAFKA_VERSION
KAFKA_LIBS=$KAFKA_HOME/libs
KAFKA_HELPER=$KAFKA_HOME/helper
FERRETDB_BIN=$CACHE/ferretdb-$FERRETDB_VERSION/bin/ferretdb

log() { printf '%s\n' "$*" >&2; }
die() { printf 'services.sh: ERROR: %s\n' "$*" >&2; exit 1; }
need() { local c; for c in "$@"; do command -v "$c" >/dev/null 2>&1 || die "'$c' is required but not on PATH"; done; }
is_root() { [[ $(id -u) -eq 0 ]]; }

# TCP connect test, no external tools.
port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

# pid alive and its command line contains a marker (guards against stale pid files / pid reuse).
pid_matches() {
    local pid=$1 marker=$2
    [[ -n $pid && -r /proc/$pid/cmdline ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$marker"
}
# Process exists and is not a zombie (a child that died stays a zombie until we exit).
proc_alive() {
    local st
    [[ -n $1 && -r /proc/$1/stat ]] || return 1
    st=$(sed -E 's/^.*\) ([A-Za-z]).*$/\1/' "/proc/$1/stat" 2>/dev/null) || return 1
    [[ -n $st && $st != Z && $st != X ]]
}
read_pid() { if [[ -f $RUN/$1.pid ]]; then cat "$RUN/$1.pid"; fi; }

fail_service() { # name logfile message
    local name=$1 logf=$2 msg=$3
    {
        printf 'services.sh: ERROR: %s %s. Log file: %s\n' "$name" "$msg" "$logf"
        if [[ -f $logf ]]; then echo "---- last lines of $logf ----"; tail -n 25 "$logf"; echo "----"; fi
    } >&2
    exit 1
}

# Start a command detached (own session, survives this script), output to a log file.
# fd 9 (our lock) is closed in the child so the lock does not outlive this script.
spawn() { # logfile cmd...
    local logf=$1; shift
    nohup setsid "$@" </dev/null >>"$logf" 2>&1 9>&- &
    SPAWNED_PID=$!
}

# ---------------------------------------------------------------------------------------------
# PostgreSQL
# ---------------------------------------------------------------------------------------------
install_postgres() {
    [[ -x $PG_BIN/initdb ]] && return 0
    is_root || die "PostgreSQL 15 is not installed ($PG_BIN/initdb missing); run: sudo apt-get install -y postgresql"
    need apt-get
    log "Installing PostgreSQL 15 with apt-get (first run only)..."
    local alog=$LOGS/apt-get.log
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-cache show postgresql-15 >/dev/null 2>&1; then
        apt-get update -q >>"$alog" 2>&1 || fail_service "apt-get update" "$alog" "failed"
    fi
    if ! apt-get install -y -q --no-install-recommends postgresql >>"$alog" 2>&1; then
        apt-get update -q >>"$alog" 2>&1 || true
        apt-get install -y -q --no-install-recommends postgresql >>"$alog" 2>&1 ||
            fail_service "apt-get install postgresql" "$alog" "failed"
    fi
    [[ -x $PG_BIN/initdb ]] || die "apt-get installed postgresql but $PG_BIN/initdb is still missing"
    # The package may start its own 'main' cluster on 5432; we run a private cluster instead.
    if command -v pg_ctlcluster >/dev/null 2>&1; then pg_ctlcluster 15 main stop >/dev/null 2>&1 || true; fi
}

# Run a PostgreSQL binary as the cluster owner (postgres when we are root), from a neutral cwd.
pg_as_owner() {
    if is_root; then (cd / && runuser -u postgres -- "$@"); else (cd / && "$@"); fi
}

# Decide (once) where the cluster lives; recorded in $RUN/postgres.dir.
pg_base() {
    if [[ -f $RUN/postgres.dir ]]; then cat "$RUN/postgres.dir"; return; fi
    local base=$STATE/postgres
    mkdir -p "$base"
    if is_root; then
        chown postgres: "$base"
        if ! runuser -u postgres -- test -w "$base" 2>/dev/null; then
            # postgres cannot reach $STATE (e.g. it is under /root, mode 700): use its home.
            rmdir "$base" 2>/dev/null || true
            local home id
            home=$(getent passwd postgres | cut -d: -f6)
            [[ -n $home && -d $home ]] || die "cannot find the postgres user's home directory"
            id=$(printf '%s' "$STATE" | cksum | cut -d' ' -f1)
            base=$home/smart-city/$id
            mkdir -p "$base"
            chown postgres: "$home/smart-city" "$base"
        fi
    fi
    printf '%s\n' "$base" >"$RUN/postgres.dir"
    printf '%s\n' "$base"
}

pg_running() { # -> 0 if our cluster's postmaster runs
    [[ -f $RUN/postgres.dir ]] || return 1
    local base; base=$(cat "$RUN/postgres.dir")
    [[ -f $base/data/postmaster.pid ]] || return 1
    pg_as_owner "$PG_BIN/pg_ctl" -D "$base/data" status >/dev/null 2>&1
}

pg_ready() {
    "$PG_BIN/pg_isready" -q -h "$HOST" -p "$PG_PORT" -t 2 >/dev/null 2>&1 &&
        "$PG_BIN/psql" -h "$HOST" -p "$PG_PORT" -U postgres -d postgres -XtAqc 'select 1' 2>/dev/null | grep -qx 1
}

start_postgres() {
    local logf=$LOGS/postgres.log base
    base=$(pg_base)
    if pg_running; then
        log "PostgreSQL is already running ($base/data)"
    else
        port_open "$PG_PORT" && die "port $PG_PORT is already in use by another process (not our PostgreSQL); stop it or set PG_PORT"
        if [[ ! -f $base/data/PG_VERSION ]]; then
            log "Initialising PostgreSQL cluster in $base/data ..."
            mkdir -p "$base/data"
            if is_root; then chown postgres: "$base/data"; fi
            pg_as_owner "$PG_BIN/initdb" -D "$base/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 \
                >>"$logf" 2>&1 || fail_service PostgreSQL "$logf" "initdb failed"
        fi
        mkdir -p "$base/socket"
        if is_root; then chown postgres: "$base/socket"; fi
        log "Starting PostgreSQL 15 on $HOST:$PG_PORT ..."
        # No -l: the postmaster inherits pg_ctl's stdout/stderr, i.e. our log file (opened by us,
        # so it can live where the postgres user has no access).
        pg_as_owner setsid "$PG_BIN/pg_ctl" -D "$base/data" -w -t "$TIMEOUT" \
            -o "-c listen_addresses=$HOST -p $PG_PORT -k $base/socket" start \
            </dev/null >>"$logf" 2>&1 9>&- || fail_service PostgreSQL "$logf" "failed to start"
    fi
    local deadline=$((SECONDS + TIMEOUT))
    until pg_ready; do
        ((SECONDS < deadline)) || fail_service PostgreSQL "$logf" "did not answer on $HOST:$PG_PORT within ${TIMEOUT}s"
        pg_running || fail_service PostgreSQL "$logf" "exited during start-up"
        sleep 0.5
    done
    local psql=("$PG_BIN/psql" -h "$HOST" -p "$PG_PORT" -U postgres -XtAq)
    if ! "${psql[@]}" -d postgres -c "select 1 from pg_database where datname='smart_city'" | grep -qx 1; then
        "${psql[@]}" -d postgres -c 'create database smart_city' >>"$logf" 2>&1 ||
            fail_service PostgreSQL "$logf" "could not create database smart_city"
    fi
    echo "PostgreSQL is ready at $HOST:$PG_PORT (database smart_city)"
}

stop_postgres() {
    if pg_running; then
        local base; base=$(cat "$RUN/postgres.dir")
        pg_as_owner "$PG_BIN/pg_ctl" -D "$base/data" -m fast -w -t 60 stop >/dev/null 2>&1 ||
            die "pg_ctl stop failed for $base/data (see $LOGS/postgres.log)"
        echo "PostgreSQL stopped"
    else
        echo "PostgreSQL is not running"
    fi
}

# ---------------------------------------------------------------------------------------------
# FerretDB
# ---------------------------------------------------------------------------------------------
build_ferretdb() {
    [[ -x $FERRETDB_BIN ]] && return 0
    need go
    local b=$CACHE/ferretdb-build blog=$LOGS/ferretdb-build.log
    log "Building FerretDB $FERRETDB_VERSION from the Go module proxy (first run only, ~1-2 min)..."
    rm -rf "$b" && mkdir -p "$b"
    (
        cd "$b"
        export GOMODCACHE=$b/gomod GOCACHE=$b/gocache GOFLAGS="${GOFLAGS:-} -modcacherw" \
            GOBIN=${FERRETDB_BIN%/*} GOWORK=off CGO_ENABLED=0
        go mod init smartcity.local/ferretdb-build
        go get -tool "github.com/FerretDB/FerretDB/cmd/ferretdb@$FERRETDB_VERSION"
        # The module zip lacks build/version/version.txt (generated from git), and the binary
        # panics at start without it ("Invalid build/version/version.txt"). Build from a
        # writable copy of the module with that file added.
        src=$(go list -m -f '{{.Dir}}' github.com/FerretDB/FerretDB)
        cp -R "$src" ferretdb-src && chmod -R u+w ferretdb-src
        echo "$FERRETDB_VERSION" >ferretdb-src/build/version/version.txt
        go mod edit -replace github.com/FerretDB/FerretDB=./ferretdb-src
        go install github.com/FerretDB/FerretDB/cmd/ferretdb
    ) >"$blog" 2>&1 || fail_service "FerretDB build" "$blog" "failed"
    "$FERRETDB_BIN" --version 2>&1 | grep -q "version: $FERRETDB_VERSION" ||
        fail_service "FerretDB build" "$blog" "produced a binary that does not run"
    rm -rf "$b"   # ~1 GB of module and build caches; only the binary is needed
}

# Real MongoDB-protocol ping (OP_MSG {ping:1}) with python3 when present, else a TCP connect.
mongo_ping() {
    command -v python3 >/dev/null 2>&1 || { port_open "$MONGO_PORT"; return; }
    python3 - "$HOST" "$MONGO_PORT" <<'PY' >/dev/null 2>&1
import socket, struct, sys
host, port = sys.argv[1], int(sys.argv[2])
def cstr(s): return s.encode() + b"\0"
body = b"\x10" + cstr("ping") + struct.pack("<i", 1) + b"\x02" + cstr("$db") + struct.pack("<i", 6) + cstr("admin")
doc = struct.pack("<i", len(body) + 5) + body + b"\0"
msg = struct.pack("<I", 0) + b"\x00" + doc  # flagBits, section kind 0, body document
hdr = struct.pack("<iiii", 16 + len(msg), 1, 0, 2013)
s = socket.create_connection((host, port), timeout=5)
s.sendall(hdr + msg)
data = b""
while len(data) < 4 or len(data) < struct.unpack("<i", data[:4])[0]:
    chunk = s.recv(65536)
    if not chunk: break
    data += chunk
ok = b"\x01ok\x00" + struct.pack("<d", 1.0)
sys.exit(0 if ok in data else 1)
PY
}

start_ferretdb() {
    local logf=$LOGS/ferretdb.log pid
    pid=$(read_pid ferretdb)
    if pid_matches "$pid" "$FERRETDB_BIN"; then
        log "FerretDB is already running (pid $pid)"
    else
        port_open "$MONGO_PORT" && die "port $MONGO_PORT is already in use by another process (not our FerretDB); stop it or set MONGO_PORT"
        mkdir -p "$STATE/ferretdb/data" "$STATE/ferretdb/state"
        log "Starting FerretDB $FERRETDB_VERSION on $HOST:$MONGO_PORT ..."
        spawn "$logf" "$FERRETDB_BIN" --listen-addr="$HOST:$MONGO_PORT" \
            --handler=sqlite --sqlite-url="file:$STATE/ferretdb/data/" \
            --state-dir="$STATE/ferretdb/state" --telemetry=disable --debug-addr=- --log-level=warn
        pid=$SPAWNED_PID
        echo "$pid" >"$RUN/ferretdb.pid"
    fi
    local deadline=$((SECONDS + TIMEOUT))
    until mongo_ping; do
        proc_alive "$pid" || fail_service FerretDB "$logf" "exited during start-up"
        ((SECONDS < deadline)) || fail_service FerretDB "$logf" "did not answer on $HOST:$MONGO_PORT within ${TIMEOUT}s"
        sleep 0.3
    done
    echo "FerretDB (MongoDB wire protocol) is ready at $HOST:$MONGO_PORT"
}

# ---------------------------------------------------------------------------------------------
# Kafka
# ---------------------------------------------------------------------------------------------
fetch_kafka() {
    [[ -f $KAFKA_LIBS/.complete && -f $KAFKA_HELPER/KafkaReady.class ]] && return 0
    need java javac mvn
    local klog=$LOGS/kafka-fetch.log
    mkdir -p "$KAFKA_HOME"
    if [[ ! -f $KAFKA_LIBS/.complete ]]; then
        log "Fetching Apache Kafka $KAFKA_VERSION jars from Maven Central (first run only)..."
        cat >"$KAFKA_HOME/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.smartcity</groupId>
  <artifactId>kafka-broker-libs</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$KAFKA_VERSION</version></dependency>
    <!-- Kafka logs through slf4j 1.7: the 1.x binding, plus log4j-core -->
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>$LOG4J_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>$LOG4J_VERSION</version></dependency>
  </dependencies>
  <build>
    <plugins>
      <plugin><groupId>org.apache.maven.plugins</groupId><artifactId>maven-dependency-plugin</artifactId><version>$DEP_PLUGIN_VERSION</version></plugin>
    </plugins>
  </build>
</project>
EOF
        rm -rf "$KAFKA_LIBS.tmp"
        mvn -B -q -f "$KAFKA_HOME/pom.xml" -Dmaven.repo.local="$KAFKA_HOME/m2" \
            dependency:copy-dependencies -DoutputDirectory="$KAFKA_LIBS.tmp" -DincludeScope=runtime \
            >"$klog" 2>&1 || fail_service "Kafka download (mvn)" "$klog" "failed"
        rm -rf "$KAFKA_LIBS" && mv "$KAFKA_LIBS.tmp" "$KAFKA_LIBS"
        touch "$KAFKA_LIBS/.complete"
        rm -rf "$KAFKA_HOME/m2"
    fi
    # A small admin-API client used as the readiness check (the broker jars have no CLI tools).
    mkdir -p "$KAFKA_HELPER"
    cat >"$KAFKA_HELPER/KafkaReady.java" <<'EOF'
import java.util.Properties;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;

/** Exits 0 once the broker answers describeCluster and listTopics; args: bootstrap timeoutSeconds. */
public class KafkaReady {
    public static void main(String[] args) throws Exception {
        long deadline = System.currentTimeMillis() + Long.parseLong(args[1]) * 1000L;
        Properties p = new Properties();
        p.put("bootstrap.servers", args[0]);
        p.put("request.timeout.ms", "5000");
        p.put("default.api.timeout.ms", "5000");
        Exception last = null;
        try (Admin admin = Admin.create(p)) {
            while (System.currentTimeMillis() < deadline) {
                try {
                    int nodes = admin.describeCluster().nodes().get(5, TimeUnit.SECONDS).size();
                    int topics = admin.listTopics().names().get(5, TimeUnit.SECONDS).size();
                    if (nodes > 0) {
                        System.out.println("nodes=" + nodes + " topics=" + topics);
                        System.exit(0);
                    }
                } catch (Exception e) {
                    last = e;
                }
                Thread.sleep(500);
            }
        }
        System.err.println("Kafka not ready: " + last);
        System.exit(1);
    }
}
EOF
    javac -nowarn -d "$KAFKA_HELPER" -cp "$KAFKA_LIBS/*" "$KAFKA_HELPER/KafkaReady.java" >>"$klog" 2>&1 ||
        fail_service "Kafka readiness helper (javac)" "$klog" "failed to compile"
}

write_kafka_config() {
    local dir=$STATE/kafka
    mkdir -p "$dir/data" "$dir/config"
    cat >"$dir/config/server.properties" <<EOF
# Generated by scripts/services.sh — single-node KRaft (broker + controller in one process)
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=$HOST:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://$HOST:$KAFKA_PORT,CONTROLLER://$HOST:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$HOST:$KAFKA_PORT,CONTROLLER://$HOST:$KAFKA_CONTROLLER_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$dir/data
num.partitions=4
auto.create.topics.enable=true
default.replication.factor=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.retention.hours=168
EOF
    cat >"$dir/config/log4j2.properties" <<'EOF'
# Generated by scripts/services.sh
status = warn
# Keep logging through Kafka's own shutdown hook (log4j's hook would close the appender first).
shutdownHook = disable
appender.out.type = Console
appender.out.name = STDOUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = STDOUT
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.statechange.name = state.change.logger
logger.statechange.level = WARN
logger.authorizer.name = kafka.authorizer.logger
logger.authorizer.level = WARN
EOF
    cat >"$dir/config/tools-log4j2.properties" <<'EOF'
status = error
appender.err.type = Console
appender.err.name = STDERR
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = %p %m (%c)%n
rootLogger.level = ERROR
rootLogger.appenderRef.err.ref = STDERR
EOF
}

start_kafka() {
    local logf=$LOGS/kafka.log dir=$STATE/kafka pid
    local marker="$dir/config/server.properties"
    pid=$(read_pid kafka)
    if pid_matches "$pid" "$marker"; then
        log "Kafka is already running (pid $pid)"
    else
        port_open "$KAFKA_PORT" && die "port $KAFKA_PORT is already in use by another process (not our Kafka); stop it or set KAFKA_PORT"
        port_open "$KAFKA_CONTROLLER_PORT" && die "port $KAFKA_CONTROLLER_PORT is already in use; stop that process or set KAFKA_CONTROLLER_PORT"
        write_kafka_config
        local cp="$KAFKA_LIBS/*"
        if [[ ! -f $dir/data/meta.properties ]]; then
            log "Formatting Kafka storage in $dir/data ..."
            if [[ ! -s $dir/cluster.id ]]; then
                local id
                id=$(java -Dlog4j2.configurationFile="$dir/config/tools-log4j2.properties" -cp "$cp" \
                    kafka.tools.StorageTool random-uuid 2>>"$logf") || id=
                [[ -n $id ]] || fail_service Kafka "$logf" "could not generate a cluster id"
                printf '%s\n' "$id" >"$dir/cluster.id"
            fi
            java -Dlog4j2.configurationFile="$dir/config/tools-log4j2.properties" -cp "$cp" \
                kafka.tools.StorageTool format -t "$(cat "$dir/cluster.id")" \
                -c "$dir/config/server.properties" --standalone -g >>"$logf" 2>&1 ||
                fail_service Kafka "$logf" "storage format failed"
        fi
        log "Starting Kafka $KAFKA_VERSION (KRaft) on $HOST:$KAFKA_PORT ..."
        spawn "$logf" java -Xms256m -Xmx512m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
            -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent \
            -Djava.awt.headless=true -Dkafka.logs.dir="$LOGS" \
            -Dlog4j2.configurationFile="$dir/config/log4j2.properties" \
            -cp "$cp" kafka.Kafka "$dir/config/server.properties"
        pid=$SPAWNED_PID
        echo "$pid" >"$RUN/kafka.pid"
    fi
    local deadline=$((SECONDS + TIMEOUT))
    until port_open "$KAFKA_PORT"; do
        proc_alive "$pid" || fail_service Kafka "$logf" "exited during start-up"
        ((SECONDS < deadline)) || fail_service Kafka "$logf" "did not listen on $HOST:$KAFKA_PORT within ${TIMEOUT}s"
        sleep 0.5
    done
    local left=$((deadline - SECONDS)) out
    ((left > 5)) || left=5
    out=$(java -Dlog4j2.configurationFile="$dir/config/tools-log4j2.properties" \
        -cp "$KAFKA_HELPER:$KAFKA_LIBS/*" KafkaReady "$HOST:$KAFKA_PORT" "$left" 2>&1) ||
        fail_service Kafka "$logf" "did not answer admin requests on $HOST:$KAFKA_PORT within ${TIMEOUT}s ($out)"
    echo "Kafka is ready at $HOST:$KAFKA_PORT"
}

# Stop a process we spawned: SIGTERM, wait, then SIGKILL.
stop_pidfile() { # name display marker
    local name=$1 display=$2 marker=$3 pid i
    pid=$(read_pid "$name")
    if pid_matches "$pid" "$marker"; then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 120; i++)); do
            pid_matches "$pid" "$marker" || break
            sleep 0.5
        done
        if pid_matches "$pid" "$marker"; then
            log "$display did not stop within 60s; killing pid $pid"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        echo "$display stopped"
    else
        echo "$display is not running"
    fi
    rm -f "$RUN/$name.pid"
}

# ---------------------------------------------------------------------------------------------
cmd_up() {
    install_postgres
    build_ferretdb
    fetch_kafka
    start_postgres
    start_ferretdb
    start_kafka
}

cmd_down() {
    # Reverse order: Kafka, FerretDB, PostgreSQL.
    stop_pidfile kafka Kafka "$STATE/kafka/config/server.properties"
    stop_pidfile ferretdb FerretDB "$FERRETDB_BIN"
    stop_postgres
}

cmd_status() {
    local all=0 pid
    if pg_running; then
        echo "PostgreSQL: running at $HOST:$PG_PORT (data $(cat "$RUN/postgres.dir")/data)"
    else
        echo "PostgreSQL: not running (would listen on $HOST:$PG_PORT)"; all=3
    fi
    pid=$(read_pid ferretdb)
    if pid_matches "$pid" "$FERRETDB_BIN"; then
        echo "FerretDB:   running (pid $pid) at $HOST:$MONGO_PORT"
    else
        echo "FerretDB:   not running (would listen on $HOST:$MONGO_PORT)"; all=3
    fi
    pid=$(read_pid kafka)
    if pid_matches "$pid" "$STATE/kafka/config/server.properties"; then
        echo "Kafka:      running (pid $pid) at $HOST:$KAFKA_PORT"
    else
        echo "Kafka:      not running (would listen on $HOST:$KAFKA_PORT)"; all=3
    fi
    echo "Logs:       $LOGS"
    return "$all"
}

# One service, for outage tests: `stop kafka|ferretdb|postgres`, `start ...`.
stop_one() {
    case $1 in
    kafka) stop_pidfile kafka Kafka "$STATE/kafka/config/server.properties" ;;
    ferretdb) stop_pidfile ferretdb FerretDB "$FERRETDB_BIN" ;;
    postgres) stop_postgres ;;
    *) die "stop what? kafka, ferretdb or postgres (got '$1')" ;;
    esac
}

start_one() {
    case $1 in
    kafka) fetch_kafka; start_kafka ;;
    ferretdb) build_ferretdb; start_ferretdb ;;
    postgres) install_postgres; start_postgres ;;
    *) die "start what? kafka, ferretdb or postgres (got '$1')" ;;
    esac
}

cmd_env() {
    cat <<EOF
export KAFKA_BOOTSTRAP_SERVERS=$HOST:$KAFKA_PORT
export MONGODB_URI=mongodb://$HOST:$MONGO_PORT
export POSTGRES_URL=postgres://postgres@$HOST:$PG_PORT/smart_city
EOF
}

main() {
    local cmd=${1:-}
    case $cmd in
    env) cmd_env; return ;;
    up | down | status) ;;
    stop | start) [[ -n ${2:-} ]] || die "usage: $0 $cmd kafka|ferretdb|postgres" ;;
    *) echo "usage: $0 {up|down|status|env|stop <service>|start <service>}" >&2; exit 2 ;;
    esac
    mkdir -p "$LOGS" "$RUN"
    # One invocation at a time per state dir (fd 9 is closed in every spawned service).
    exec 9>"$RUN/lock"
    if command -v flock >/dev/null 2>&1; then
        flock -w 900 9 || die "another services.sh is running for $STATE"
    fi
    case $cmd in
    stop) stop_one "$2" ;;
    start) start_one "$2" ;;
    *) "cmd_$cmd" ;;
    esac
}

main "$@"
