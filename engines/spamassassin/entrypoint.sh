#!/bin/bash
# Run spamd in the foreground (children as debian-spamd, log to stderr) with Debian's rules
# and engines/spamassassin/local.cf, the same argv as tests/harness/spamd.py except that it
# listens on 0.0.0.0:$SPAMD_PORT and accepts the private address ranges compose networks use.
set -euo pipefail

PORT=${SPAMD_PORT:-783}
ALLOWED=${SPAMD_ALLOWED_IPS:-127.0.0.1,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16}
CHILDREN=${SPAMD_CHILDREN:-2}
HOME_DIR=/var/lib/spamassassin

install -d -o debian-spamd -g debian-spamd -m 0755 "$HOME_DIR" /run/spamd
echo "spamd entrypoint: listening on 0.0.0.0:$PORT for $ALLOWED, $CHILDREN children"
exec spamd \
    --listen="0.0.0.0:$PORT" \
    --allowed-ips="$ALLOWED" \
    --local \
    --nouser-config \
    --siteconfigpath=/etc/spamassassin \
    --pidfile=/run/spamd/spamd.pid \
    --max-children="$CHILDREN" \
    --min-children=1 \
    --username=debian-spamd \
    --groupname=debian-spamd \
    --helper-home-dir="$HOME_DIR" \
    --syslog=stderr
