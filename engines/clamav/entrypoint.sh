#!/bin/bash
# Render engines/clamav/clamd.conf for the container and run clamd in the foreground as
# user clamav, logging to stderr. Listens on 0.0.0.0:$CLAMD_PORT (the template binds
# 127.0.0.1 for the native harness; a container must accept its network's peers).
#
# Environment: CLAMD_PORT (3310), CLAMD_DBDIR (/var/lib/clamav: mount the real database
# here in production), CLAMD_SELFCHECK (seconds between database reload checks; the
# template's 0 = never suits the static test DB; set e.g. 600 when freshclam updates the DB).
set -euo pipefail

CLAMD_PORT=${CLAMD_PORT:-3310}
DBDIR=${CLAMD_DBDIR:-/var/lib/clamav}
RUNDIR=${CLAMD_RUNDIR:-/run/clamav}
TMPDIR_=${CLAMD_TMPDIR:-/var/tmp/clamav}
CONF=/etc/clamav/clamd.conf

install -d -o clamav -g clamav -m 0755 "$RUNDIR" "$TMPDIR_"
sed -e "s|@PORT@|$CLAMD_PORT|g" -e "s|@DBDIR@|$DBDIR|g" -e "s|@RUNDIR@|$RUNDIR|g" \
    -e "s|@TMPDIR@|$TMPDIR_|g" -e "s|@SOCKET@|$RUNDIR/clamd.sock|g" -e "s|@BIND@|0.0.0.0|g" \
    /usr/share/quorum/clamav/clamd.conf.in >"$CONF"
if [[ -n ${CLAMD_SELFCHECK:-} ]]; then
    sed -i "s|^SelfCheck .*|SelfCheck $CLAMD_SELFCHECK|" "$CONF"
    grep -q '^SelfCheck ' "$CONF" || echo "SelfCheck $CLAMD_SELFCHECK" >>"$CONF"
fi
if grep -n '@[A-Z_]*@' "$CONF" >&2; then
    echo "clamd entrypoint: unrendered placeholders left in $CONF (see engines/clamav/README.md)" >&2
    exit 1
fi

shopt -s nullglob
dbs=("$DBDIR"/*.{cvd,cld,cud,ndb,hdb,hsb,mdb,msb,ldb,cdb,yar,yara,ign2,fp,sfp})
if ((${#dbs[@]} == 0)); then
    echo "clamd entrypoint: no signature database in $DBDIR; mount the ClamAV database there" >&2
    exit 1
fi
echo "clamd entrypoint: ${#dbs[@]} database file(s) in $DBDIR, listening on 0.0.0.0:$CLAMD_PORT"

exec setpriv --reuid=clamav --regid=clamav --init-groups -- clamd --foreground --config-file="$CONF"
