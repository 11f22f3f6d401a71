#!/usr/bin/env bash
# Compose-level end-to-end test of Quorum: build every image, bring the stack up, wait for
# health (polled here, bounded), run tests/compose (QUORUM_COMPOSE_TESTS=1 pytest -m compose;
# tests/conftest.py skips compose tests without that variable) through the published
# Postfix port, print a summary with timings, and ALWAYS tear the stack down (volumes too).
#
# Uses podman-compose if installed (run compose/podman-setup.sh once on a host without
# Docker), else `docker compose`, else docker-compose; override with QUORUM_COMPOSE_CMD.
#
# Environment:
#   QUORUM_COMPOSE_PROJECT         project name (default quorum-test)
#   QUORUM_SMTP_PORT / QUORUM_SINK_PORT   published 127.0.0.1 ports (default 2525 / 8025)
#   QUORUM_COMPOSE_HEALTH_TIMEOUT  seconds to wait for all services to be healthy (default 300)
#   QUORUM_COMPOSE_KEEP=1          leave the stack running afterwards (for debugging)
#   QUORUM_COMPOSE_NO_BUILD=1      skip the build step (images must exist)
#   QUORUM_BUILD_CA=FILE           extra CA bundle (PEM) for pip in the quorum image build; by
#                                  default the `cert` of the host's pip config, if it sets one
#   PIP_INDEX_URL                  PyPI mirror for the quorum image build
#   PYTEST_ARGS                    extra pytest arguments (e.g. "-k clean")
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

export QUORUM_COMPOSE_PROJECT=${QUORUM_COMPOSE_PROJECT:-quorum-test}
HEALTH_TIMEOUT=${QUORUM_COMPOSE_HEALTH_TIMEOUT:-300}

PY=python3
[[ -x $REPO/.venv/bin/python ]] && PY=$REPO/.venv/bin/python
STACKCTL=("$PY" "$REPO/compose/stackctl.py")

if [[ -n ${QUORUM_COMPOSE_CMD:-} ]]; then
    read -r -a COMPOSE <<<"$QUORUM_COMPOSE_CMD"
elif command -v podman-compose >/dev/null; then
    COMPOSE=(podman-compose)
elif docker compose version >/dev/null 2>&1; then
    COMPOSE=(docker compose)
elif command -v docker-compose >/dev/null; then
    COMPOSE=(docker-compose)
else
    echo "test-stack: no compose tool; run compose/podman-setup.sh (or install Docker)" >&2
    exit 2
fi
export QUORUM_COMPOSE_CMD="${COMPOSE[*]}"
DC=("${COMPOSE[@]}" -f "$REPO/docker-compose.yml" -p "$QUORUM_COMPOSE_PROJECT")

T0=$(date +%s)
declare -a SUMMARY=()
phase_start=0
phase() { phase_start=$(date +%s); echo; echo "=== test-stack: $* ==="; }
phase_done() { SUMMARY+=("$(printf '%-28s %5ss  %s' "$1" "$(( $(date +%s) - phase_start ))" "${2:-ok}")"); }

CA_COPY=""
cleanup() {
    local rc=$?
    set +e
    if [[ $rc -ne 0 ]]; then
        echo; echo "=== test-stack: FAILED (rc=$rc): service status and logs ==="
        if [[ $("${STACKCTL[@]}" status) != *"(no container)"*"(no container)"*"(no container)"* ]]; then
            "${STACKCTL[@]}" status
            "${STACKCTL[@]}" logs --tail 40
        fi
    fi
    if [[ ${QUORUM_COMPOSE_KEEP:-0} == 1 ]]; then
        echo "test-stack: QUORUM_COMPOSE_KEEP=1, leaving project $QUORUM_COMPOSE_PROJECT running"
        echo "            tear down with: ${DC[*]} down -v"
    else
        phase "tear down"
        "${DC[@]}" down -v -t 10 >/tmp/quorum-compose-down.$$.log 2>&1 \
            || { echo "test-stack: down failed:"; tail -20 /tmp/quorum-compose-down.$$.log; }
        rm -f /tmp/quorum-compose-down.$$.log
        phase_done "tear down"
    fi
    [[ -n $CA_COPY ]] && rm -f "$CA_COPY"
    echo
    echo "=== test-stack summary ($QUORUM_COMPOSE_CMD, project $QUORUM_COMPOSE_PROJECT) ==="
    printf '%s\n' "${SUMMARY[@]}"
    printf '%-28s %5ss  %s\n' "total" "$(( $(date +%s) - T0 ))" "$([[ $rc -eq 0 ]] && echo PASSED || echo "FAILED rc=$rc")"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- preflight ---------------------------------------------------------------------------
phase "preflight"
# Every Dockerfile must start with the same shared apt layer, or the cache stops sharing it.
ref=""
for df in Dockerfile engines/*/Dockerfile postfix-conf/Dockerfile compose/sink/Dockerfile; do
    block=$(awk '/^# >>> shared layer/ {on = 1} on {print} /^# <<< end of shared layer/ {exit}' "$df")
    if [[ -z $block ]]; then
        echo "test-stack: $df lacks the shared layer block" >&2; exit 1
    fi
    if [[ -z $ref ]]; then ref=$block; ref_df=$df
    elif [[ $block != "$ref" ]]; then
        echo "test-stack: the shared layer in $df differs from $ref_df:" >&2
        diff <(echo "$ref") <(echo "$block") >&2 || true
        exit 1
    fi
done
if command -v docker-compose >/dev/null; then
    docker-compose -f docker-compose.yml config -q
fi
# A leftover stack of the same project (e.g. an interrupted run) would hold the ports.
"${DC[@]}" down -v -t 5 >/dev/null 2>&1 || true
# Published ports: the defaults (2525, 8025) unless taken, then any free port; explicit
# QUORUM_SMTP_PORT / QUORUM_SINK_PORT are used as given.
pick_port() {
    "$PY" - "$1" <<'PYEOF'
import socket, sys
with socket.socket() as s:
    try:
        s.bind(("127.0.0.1", int(sys.argv[1])))
    except OSError:
        s.bind(("127.0.0.1", 0))
    print(s.getsockname()[1])
PYEOF
}
export QUORUM_SMTP_PORT=${QUORUM_SMTP_PORT:-$(pick_port 2525)}
export QUORUM_SINK_PORT=${QUORUM_SINK_PORT:-$(pick_port 8025)}
"${STACKCTL[@]}" info
phase_done "preflight"

# --- build -------------------------------------------------------------------------------
if [[ ${QUORUM_COMPOSE_NO_BUILD:-0} != 1 ]]; then
    ca=${QUORUM_BUILD_CA:-${PIP_CERT:-}}
    if [[ -z $ca ]]; then
        for pip in "$REPO/.venv/bin/pip" pip3 pip; do
            if command -v "$pip" >/dev/null 2>&1; then
                ca=$("$pip" config get global.cert 2>/dev/null || true)
                [[ -n $ca ]] && break
            fi
        done
    fi
    if [[ -n $ca && -s $ca ]]; then
        CA_COPY=$REPO/compose/build-ca/test-stack.crt
        cp "$ca" "$CA_COPY"
        echo "test-stack: pip in the quorum build trusts $ca as well"
    fi
    phase "build images"
    "${DC[@]}" build
    phase_done "build images"
    [[ -n $CA_COPY ]] && rm -f "$CA_COPY" && CA_COPY=""
fi

# --- up + health -------------------------------------------------------------------------
phase "up"
UP_LOG=$(mktemp /tmp/quorum-compose-up.XXXXXX)
if ! "${DC[@]}" up -d >"$UP_LOG" 2>&1; then
    tail -40 "$UP_LOG"; rm -f "$UP_LOG"; exit 1
fi
rm -f "$UP_LOG"
phase_done "up -d"

phase "wait for health (max ${HEALTH_TIMEOUT}s)"
"${STACKCTL[@]}" wait-healthy --timeout "$HEALTH_TIMEOUT"
phase_done "healthy"

phase "quorum runs as user quorum (ps -o user= in its container)"
"${STACKCTL[@]}" quorum-user
phase_done "unprivileged quorum"

# --- end-to-end cases --------------------------------------------------------------------
phase "pytest -m compose tests/compose"
JUNIT=$(mktemp /tmp/quorum-compose-junit.XXXXXX)
# shellcheck disable=SC2086
QUORUM_COMPOSE_TESTS=1 "$PY" -m pytest -m compose tests/compose -v -s -p no:cacheprovider --durations=0 \
    --junitxml="$JUNIT" ${PYTEST_ARGS:-}
# A skipped case is a failure here: the stack is up, every case must run.
counts=$("$PY" - "$JUNIT" <<'PYEOF'
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
suite = root if root.tag == "testsuite" else root.find("testsuite")
print(suite.get("tests", "0"), suite.get("skipped", "0"))
PYEOF
)
rm -f "$JUNIT"
read -r n_tests n_skipped <<<"$counts"
if [[ $n_tests == 0 || $n_skipped != 0 ]]; then
    echo "test-stack: $n_tests test(s) collected, $n_skipped skipped: every compose case must run" >&2
    exit 1
fi
phase_done "end-to-end tests" "$n_tests passed"
