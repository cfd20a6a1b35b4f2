#!/usr/bin/env bash
# Fetch a real Hive 4 standalone metastore (plus the Hadoop jars it needs) for the test suite.
#
# Everything goes into a cache OUTSIDE the work tree:
#   ${STRATA_CACHE:-$HOME/.cache/strata}/hive4/
#     lib/        every runtime jar: hive-standalone-metastore-server 4.0.1, its
#                 dependencies, and hadoop-common / hadoop-hdfs(-client) /
#                 hadoop-mapreduce-client-core 3.3.6 added by hand
#     .complete   marker: written last; holds the sha256 of scripts/hive4/pom.xml,
#                 so editing the pom makes the next run fetch again
#
# The jar list is scripts/hive4/pom.xml (resolved with
# `mvn dependency:copy-dependencies` from Maven Central). Run the server with
# tests/support/hms4.py (class Hive4Metastore); it needs a Java 17 `java`
# (JAVA_HOME or PATH).
#
# Idempotent: re-running after success returns at once.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
POM="$SCRIPT_DIR/hive4/pom.xml"
CACHE_ROOT="${STRATA_CACHE:-$HOME/.cache/strata}"
DEST="$CACHE_ROOT/hive4"
LIB="$DEST/lib"
MARKER="$DEST/.complete"

log() { printf '[fetch_hive4] %s\n' "$*" >&2; }

POM_SHA="$(sha256sum "$POM" | cut -d' ' -f1)"

if [[ -f "$MARKER" ]] && grep -q "pom-sha256 $POM_SHA" "$MARKER" \
        && compgen -G "$LIB/hive-standalone-metastore-server-*.jar" >/dev/null; then
    log "already fetched (marker $MARKER)"
else
    command -v mvn >/dev/null || { log "mvn not found: apt-get install maven"; exit 1; }
    mkdir -p "$DEST"
    rm -f "$MARKER"
    TMP_LIB="$DEST/lib.tmp"
    rm -rf "$TMP_LIB"
    log "resolving $POM into $LIB (Maven Central)"
    start=$(date +%s)
    mvn -B -q -ntp -Dstyle.color=never -f "$POM" \
        dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$TMP_LIB" 2>&1 \
        | sed 's/\x1b\[[0-9;]*m//g' >&2  # Maven 3.8 -q still prints bare colour resets
    for jar in hive-standalone-metastore-server hive-standalone-metastore-common \
               hadoop-common hadoop-hdfs-client hadoop-hdfs hadoop-mapreduce-client-core \
               derby datanucleus-core; do
        if ! compgen -G "$TMP_LIB/$jar-[0-9]*.jar" >/dev/null; then
            log "missing $jar in $TMP_LIB"
            exit 1
        fi
    done
    rm -rf "$LIB"
    mv "$TMP_LIB" "$LIB"
    {
        printf 'hive4 metastore fetched %s in %ss\n' \
            "$(date -u +%FT%TZ)" "$(( $(date +%s) - start ))"
        printf 'pom-sha256 %s\n' "$POM_SHA"
    } > "$MARKER"
    log "fetched $(ls "$LIB" | wc -l) jars, $(du -sh "$LIB" | cut -f1)"
fi

echo "HIVE4_LIB=$LIB"
echo "HIVE4_SERVER_JAR=$(ls "$LIB"/hive-standalone-metastore-server-*.jar)"
