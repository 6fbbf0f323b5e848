#!/usr/bin/env bash
# benches/peers/spark/setup.sh — install the Spark peer: a Python venv with pyspark from PyPI and
# the Kafka connector jars from Maven Central, under $SPARK_PEER_HOME (default
# ${XDG_CACHE_HOME:-$HOME/.cache}/smart-city/spark-peer). Idempotent: what is there is reused.
#
# Prints nothing but progress on stderr; `setup.sh env` prints export lines for run.sh.
#
# Versions: pyspark and the connector must be the same Spark release. On 2026-11-30 pyspark
# 4.3.0 and 4.2.1 had no spark-sql-kafka-0-10_2.13 on Maven Central; 4.2.0 has both.
# Needs: python3 (3.10+, with venv), java 17 (JDK: `java File.java` runs KafkaTool), mvn.
set -euo pipefail

SPARK_VERSION=${SPARK_VERSION:-4.2.0}
DEP_PLUGIN_VERSION=3.8.1
HOME_DIR=${SPARK_PEER_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/smart-city/spark-peer}
VENV=$HOME_DIR/venv
JARS=$HOME_DIR/jars-$SPARK_VERSION

log() { printf 'setup.sh: %s\n' "$*" >&2; }
die() { printf 'setup.sh: ERROR: %s\n' "$*" >&2; exit 1; }
need() { local c; for c in "$@"; do command -v "$c" >/dev/null 2>&1 || die "'$c' is required but not on PATH"; done; }

install_venv() {
    if [[ -x $VENV/bin/python ]] && "$VENV/bin/python" -c "import pyspark, sys; sys.exit(pyspark.__version__ != '$SPARK_VERSION')" 2>/dev/null; then
        return 0
    fi
    need python3
    log "Installing pyspark $SPARK_VERSION into $VENV (first run only; ~450 MB)..."
    mkdir -p "$HOME_DIR"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q "pyspark==$SPARK_VERSION"
}

# The connector and what it needs beyond pyspark's own jars: the token provider, kafka-clients
# and commons-pool2. Everything else it pulls (scala-library, hadoop-client, lz4, snappy, slf4j)
# ships inside pyspark in a newer version and is left out so the classpath has one of each.
install_jars() {
    [[ -f $JARS/.complete ]] && return 0
    need mvn java
    log "Fetching spark-sql-kafka-0-10_2.13 $SPARK_VERSION and its dependencies from Maven Central (first run only)..."
    mkdir -p "$HOME_DIR"
    cat >"$HOME_DIR/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.smartcity</groupId>
  <artifactId>spark-peer-libs</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.spark</groupId><artifactId>spark-sql-kafka-0-10_2.13</artifactId><version>$SPARK_VERSION</version></dependency>
  </dependencies>
  <build>
    <plugins>
      <plugin><groupId>org.apache.maven.plugins</groupId><artifactId>maven-dependency-plugin</artifactId><version>$DEP_PLUGIN_VERSION</version></plugin>
    </plugins>
  </build>
</project>
EOF
    rm -rf "$JARS.tmp"
    mvn -B -q -f "$HOME_DIR/pom.xml" -Dmaven.repo.local="$HOME_DIR/m2" \
        dependency:copy-dependencies -DoutputDirectory="$JARS.tmp" -DincludeScope=runtime \
        -DincludeArtifactIds=spark-sql-kafka-0-10_2.13,spark-token-provider-kafka-0-10_2.13,kafka-clients,commons-pool2 \
        >"$HOME_DIR/mvn.log" 2>&1 || die "mvn failed; see $HOME_DIR/mvn.log"
    local n
    n=$(find "$JARS.tmp" -name '*.jar' | wc -l)
    [[ $n -eq 4 ]] || die "expected 4 jars in $JARS.tmp, found $n; see $HOME_DIR/mvn.log"
    rm -rf "$JARS" && mv "$JARS.tmp" "$JARS"
    touch "$JARS/.complete"
    rm -rf "$HOME_DIR/m2"
}

print_env() {
    local site
    site=$("$VENV/bin/python" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')
    local jars
    jars=$(find "$JARS" -name '*.jar' | sort | paste -sd, -)
    echo "export SPARK_PEER_PYTHON=$VENV/bin/python"
    echo "export SPARK_PEER_SUBMIT=$site/bin/spark-submit"
    echo "export SPARK_PEER_JARS=$jars"
    # KafkaTool.java: kafka-clients and pyspark's slf4j-api.
    echo "export SPARK_PEER_TOOL_CP=$(find "$JARS" -name 'kafka-clients-*.jar'):$(find "$site/jars" -name 'slf4j-api-*.jar' | head -1)"
    echo "export SPARK_PEER_VERSION=$SPARK_VERSION"
}

case ${1:-install} in
    install) install_venv; install_jars; log "ready: $VENV, $JARS" ;;
    env) install_venv; install_jars; print_env ;;
    *) die "usage: setup.sh [install|env]" ;;
esac
