#!/bin/bash
# Render engines/redis/redis.conf for the container and run redis-server in the
# foreground as user redis, logging to stdout. Listens on 0.0.0.0:$REDIS_PORT.
#
# Redis is authenticated: the `default` user is off and Quorum logs in as the ACL user
# $REDIS_USER (default quorum) with a password; with REDIS_TLS=yes (the default) the port
# speaks TLS only. Whoever can write to Redis can change what Quorum trusts there (tenant
# records, rate-limit counters), so it must never be open. The secrets live in
# $REDIS_SECRETS_DIR (a volume shared with the quorum container only) and are made on the
# first start when absent:
#   redis-password   the ACL user's password      -> [redis] password_file
#   redis-hmac.key   signs verdict-cache entries  -> [redis] hmac_key_file (Quorum only)
#   ca.crt           the CA of the server cert    -> [redis] tls_ca_file
#   redis.crt/.key   the server certificate (names: redis, localhost, 127.0.0.1, $REDIS_TLS_NAMES)
# To use your own, put them there before the first start (or mount them).
#
#   quorum-redis --health    PING over the same user, password and TLS (compose healthcheck)
#   quorum-redis --cli ARGS  redis-cli over the same user, password and TLS (operators, tests)
set -euo pipefail

PORT=${REDIS_PORT:-6379}
DIR=${REDIS_DIR:-/var/lib/redis}
CONF=${REDIS_CONF:-/etc/redis/quorum-redis.conf}
TEMPLATE=${REDIS_TEMPLATE:-/usr/share/quorum/redis/redis.conf.in}
SECRETS=${REDIS_SECRETS_DIR:-/run/quorum-redis}
USER_NAME=${REDIS_USER:-quorum}
TLS=${REDIS_TLS:-yes}
RUN_AS=${REDIS_RUN_AS:-redis}
# The group that may read the password and the HMAC key: docker-compose.yml gives the quorum
# container this group (group_add), so the files are 0640, never world-readable.
SECRETS_GID=${REDIS_SECRETS_GID:-6380}

cli() {
    local tls=()
    [ "$TLS" = yes ] && tls=(--tls --cacert "$SECRETS/ca.crt")
    REDISCLI_AUTH="$(cat "$SECRETS/redis-password")" \
        redis-cli -h 127.0.0.1 -p "$PORT" --user "$USER_NAME" "${tls[@]}" "$@"
}

if [ "${1:-}" = "--health" ]; then
    [ "$(cli ping 2>/dev/null)" = PONG ]
    exit
fi
if [ "${1:-}" = "--cli" ]; then
    shift
    cli "$@"
    exit
fi

install -d -o "$RUN_AS" -g "$RUN_AS" -m 0750 "$DIR"
install -d -m 0755 "$SECRETS"
umask 027
if [ ! -s "$SECRETS/redis-password" ]; then
    head -c 24 /dev/urandom | base64 | tr -d '/+=\n' >"$SECRETS/redis-password.tmp"
    mv "$SECRETS/redis-password.tmp" "$SECRETS/redis-password"
fi
if [ ! -s "$SECRETS/redis-hmac.key" ]; then
    head -c 32 /dev/urandom | base64 >"$SECRETS/redis-hmac.key.tmp"
    mv "$SECRETS/redis-hmac.key.tmp" "$SECRETS/redis-hmac.key"
fi
chgrp "$SECRETS_GID" "$SECRETS/redis-password" "$SECRETS/redis-hmac.key"
chmod 0640 "$SECRETS/redis-password" "$SECRETS/redis-hmac.key"
if [ "$TLS" = yes ] && [ ! -s "$SECRETS/redis.crt" ]; then
    work=$(mktemp -d)
    openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
        -subj "/CN=Quorum stack Redis CA" -keyout "$work/ca.key" -out "$work/ca.crt" \
        -addext "basicConstraints=critical,CA:TRUE,pathlen:0" -addext "keyUsage=critical,keyCertSign,cRLSign" \
        2>/dev/null
    san="DNS:redis,DNS:localhost,IP:127.0.0.1"
    for name in ${REDIS_TLS_NAMES:-}; do san="$san,DNS:$name"; done
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=redis" \
        -keyout "$work/redis.key" -out "$work/redis.csr" 2>/dev/null
    printf 'subjectAltName=%s\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n' "$san" >"$work/ext"
    openssl x509 -req -in "$work/redis.csr" -CA "$work/ca.crt" -CAkey "$work/ca.key" -CAcreateserial \
        -days 3650 -extfile "$work/ext" -out "$work/redis.crt" 2>/dev/null
    install -m 0644 "$work/ca.crt" "$SECRETS/ca.crt"
    install -m 0600 -o "$RUN_AS" "$work/redis.key" "$SECRETS/redis.key"
    install -m 0644 "$work/redis.crt" "$SECRETS/redis.crt"
    rm -rf "$work"  # the CA key is not kept: a new certificate means a new CA
fi

password=$(cat "$SECRETS/redis-password")
if [ "$TLS" = yes ]; then listen_port=0; else listen_port=$PORT; fi
sed -e "s|@BIND@|0.0.0.0|g" -e "s|@PORT@|$listen_port|g" -e "s|@DIR@|$DIR|g" "$TEMPLATE" >"$CONF.tmp"
{
    echo "# --- added by quorum-redis: authentication and TLS ---"
    echo "user default off resetpass"
    echo "user $USER_NAME on >$password ~* &* +@all"
    if [ "$TLS" = yes ]; then
        echo "tls-port $PORT"
        echo "tls-cert-file $SECRETS/redis.crt"
        echo "tls-key-file $SECRETS/redis.key"
        echo "tls-ca-cert-file $SECRETS/ca.crt"
        echo "tls-auth-clients optional"
    fi
} >>"$CONF.tmp"
# Protected mode refuses every non-loopback client while `default` is password-less; here the
# clients are the other containers of the stack and every one must log in as the ACL user.
sed -i 's|^protected-mode .*|protected-mode no|' "$CONF.tmp"
if grep -n '@[A-Z_]*@' "$CONF.tmp" >&2; then
    echo "redis entrypoint: unrendered placeholders left in $CONF (see engines/redis/README.md)" >&2
    exit 1
fi
chmod 0600 "$CONF.tmp"
chown "$RUN_AS:$RUN_AS" "$CONF.tmp"
mv "$CONF.tmp" "$CONF"
echo "redis entrypoint: listening on 0.0.0.0:$PORT ($([ "$TLS" = yes ] && echo TLS || echo plain)), ACL user $USER_NAME, dir $DIR"
exec setpriv --reuid="$RUN_AS" --regid="$RUN_AS" --init-groups -- redis-server "$CONF"
