#!/bin/bash
# Render engines/redis/redis.conf for the container and run redis-server in the
# foreground as user redis, logging to stdout. Listens on 0.0.0.0:$REDIS_PORT: the
# stack's network is private and Redis holds only disposable counters (no persistence).
set -euo pipefail

PORT=${REDIS_PORT:-6379}
DIR=${REDIS_DIR:-/var/lib/redis}
CONF=/etc/redis/quorum-redis.conf

install -d -o redis -g redis -m 0750 "$DIR"
sed -e "s|@BIND@|0.0.0.0|g" -e "s|@PORT@|$PORT|g" -e "s|@DIR@|$DIR|g" \
    /usr/share/quorum/redis/redis.conf.in >"$CONF"
# Protected mode refuses every non-loopback client of a password-less Redis; here the
# clients are the other containers of the stack, so it is turned off for the container.
sed -i 's|^protected-mode .*|protected-mode no|' "$CONF"
if grep -n '@[A-Z_]*@' "$CONF" >&2; then
    echo "redis entrypoint: unrendered placeholders left in $CONF (see engines/redis/README.md)" >&2
    exit 1
fi
chown redis:redis "$CONF"
echo "redis entrypoint: listening on 0.0.0.0:$PORT, dir $DIR"
exec setpriv --reuid=redis --regid=redis --init-groups -- redis-server "$CONF"
