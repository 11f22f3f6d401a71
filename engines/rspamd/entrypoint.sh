#!/bin/bash
# Run rspamd in the foreground (logging to the console) with engines/rspamd/rspamd.conf.
# Scanner on :$RSPAMD_NORMAL_PORT (Quorum posts to /checkv2), controller on :$RSPAMD_CONTROLLER_PORT.
# DNS goes to the container's resolver (the first nameserver in /etc/resolv.conf) unless
# RSPAMD_DNS_SERVER is set.
set -euo pipefail

CONFDIR=/etc/quorum/rspamd
DBDIR=${RSPAMD_DBDIR:-/var/lib/rspamd}
RUNDIR=${RSPAMD_RUNDIR:-/run/rspamd}
NORMAL_PORT=${RSPAMD_NORMAL_PORT:-11333}
CONTROLLER_PORT=${RSPAMD_CONTROLLER_PORT:-11334}
DNS_SERVER=${RSPAMD_DNS_SERVER:-}
if [[ -z $DNS_SERVER ]]; then
    ns=$(awk '$1 == "nameserver" { print $2; exit }' /etc/resolv.conf 2>/dev/null || true)
    ns=${ns:-127.0.0.1}
    [[ $ns == *:* ]] && ns="[$ns]"
    DNS_SERVER="$ns:53"
fi


install -d -o _rspamd -g _rspamd -m 0755 "$DBDIR" "$RUNDIR"
echo "rspamd entrypoint: normal :$NORMAL_PORT, controller :$CONTROLLER_PORT, DNS $DNS_SERVER"

exec rspamd -f -c "$CONFDIR/rspamd.conf" -u _rspamd -g _rspamd \
    --var LOCAL_CONFDIR="$CONFDIR" --var DBDIR="$DBDIR" --var RUNDIR="$RUNDIR" \
    --var BIND_ADDR="*" --var NORMAL_PORT="$NORMAL_PORT" --var CONTROLLER_PORT="$CONTROLLER_PORT" \
    --var DNS_SERVER="$DNS_SERVER"
