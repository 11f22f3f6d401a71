#!/usr/bin/env bash
# Quorum's one entry point for a fresh Debian 12 machine (run as root or with sudo).
#   ./run.sh demo   install everything, bring the whole stack up on loopback with the embedded
#                   default config, send a clean, a virus and a spam message through it
#   ./run.sh test   install everything, run the test suite against the real programs, then the
#                   docker-compose stack test (skip it with QUORUM_SKIP_COMPOSE=1)
#   ./run.sh bench  run the benchmarks under bench/
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
REPO=$PWD

APT_PACKAGES=(
  python3 python3-venv python3-dev gcc libmilter-dev
  postfix clamav-daemon clamav rspamd spamassassin spamd redis-server redis-tools nsd
  clamav-milter spamass-milter  # peers measured by bench/peers.py; started only by the harness, never as services
  docker-compose procps iproute2 ca-certificates
  systemd  # systemd-analyze verify checks packaging/quorum.service (no systemd as PID 1 needed)
  clamav-testfiles prometheus  # quorum evaluate's corpus test; promtool checks monitoring/quorum-alerts.yml
  libmail-dkim-perl libcryptx-perl  # Mail::DKIM: the signing tests' independent verifier (CryptX: Ed25519 in newer Mail::DKIM)
  opendkim opendkim-tools  # the peer bench/signing_peers.py measures signing against (started only by it)
)

as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

install_system() {
  local missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if ((${#missing[@]})); then
    echo "== apt-get install ${missing[*]}"
    echo "postfix postfix/main_mailer_type select No configuration" | as_root debconf-set-selections
    as_root apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
  fi
}

# Quorum's own unprivileged account: the demo runs Quorum as this user, and the tests check the
# drop from root to it (packaging/quorum.service and the compose image use the same name).
ensure_quorum_user() {
  if ! getent passwd quorum >/dev/null; then
    echo "== useradd quorum"
    as_root useradd --system --user-group --home-dir /var/lib/quorum --no-create-home \
      --shell /usr/sbin/nologin quorum
  fi
}

install_python() {
  if [[ ! -x .venv/bin/python ]]; then
    echo "== python venv in .venv"
    /usr/bin/python3 -m venv .venv
  fi
  local stamp=.venv/.quorum-installed
  if [[ ! -f $stamp || pyproject.toml -nt $stamp || examples/feature-hello/pyproject.toml -nt $stamp \
        || examples/engine-keyword/pyproject.toml -nt $stamp ]]; then
    .venv/bin/pip install -q --upgrade pip
    .venv/bin/pip install -q -e ".[test]"
    # The two plug-in examples, installed as a site would install its own (entry points; the tests
    # run a message through each): examples/README.md
    .venv/bin/pip install -q -e examples/feature-hello -e examples/engine-keyword
    touch "$stamp"
  fi
}

cmd=${1:-}
case "$cmd" in
  demo)
    install_system
    ensure_quorum_user
    install_python
    exec .venv/bin/python -m tests.harness.demo "${@:2}"
    ;;
  test)
    install_system
    ensure_quorum_user
    install_python
    echo "== static checks"
    .venv/bin/ruff check milter tests bench examples
    .venv/bin/mypy
    .venv/bin/lint-imports  # the core imports no feature ([tool.importlinter] in pyproject.toml)
    echo "== test suite (real Postfix, clamd, rspamd, spamd, Redis, NSD on 127.0.0.1)"
    QUORUM_REQUIRE_INTEGRATION=1 .venv/bin/python -m pytest -q -p no:cacheprovider "${@:2}"
    if [[ ${QUORUM_SKIP_COMPOSE:-0} != 1 ]]; then
      echo "== docker-compose stack test"
      bash compose/podman-setup.sh
      bash compose/test-stack.sh
    fi
    ;;
  bench)
    install_system
    install_python
    for b in bench/throughput.py bench/memory.py bench/engines_latency.py bench/auth_bench.py bench/ratelimit_bench.py bench/peers.py bench/signing_peers.py; do
      echo "== $b"
      .venv/bin/python "$b"
    done
    ;;
  *)
    echo "usage: $0 demo | test | bench" >&2
    exit 2
    ;;
esac
