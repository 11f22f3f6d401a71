#!/bin/bash
# Postfix in a container for the Quorum compose stack.
#
#   quorum-postfix --apply-fragments   (build time) apply postfix-conf/main.cf and master.cf
#                                      (the operator fragments) to Debian's stock config
#   quorum-postfix                     (start) apply the container settings below, then
#                                      exec `postfix start-fg` (master as PID 1, log to stdout)
#   quorum-postfix --health            (health check) exit 0 if smtpd answers 220 on port 25
#
# Environment (defaults suit docker-compose.yml):
#   QUORUM_MILTER           milter address replacing the fragment's     inet:quorum:9900
#   POSTFIX_MYHOSTNAME      myhostname                                  mx.quorum.test
#   POSTFIX_RELAY_DOMAINS   domains accepted from anyone and relayed    example.test
#   POSTFIX_RELAYHOST       where all mail goes (the internal mail hub) [sink]:25
#   POSTFIX_MYNETWORKS      clients allowed to relay anywhere           127.0.0.0/8
#   POSTFIX_XCLIENT_HOSTS   smtpd_authorized_xclient_hosts (tests)      (empty: XCLIENT off)
#   POSTFIX_TLS_CERT/_KEY   PEM files for STARTTLS; a self-signed pair is made if absent
set -euo pipefail

FRAGMENTS=/usr/share/quorum/postfix

# Print "name = value" per parameter of a main.cf-style file: comments and blank lines
# dropped, continuation lines (leading whitespace) joined.
main_cf_params() {
    awk '
        /^[ \t]*#/ || /^[ \t]*$/ { next }
        /^[ \t]/ { sub(/^[ \t]+/, " "); cur = cur $0; next }
        { if (cur != "") print cur; cur = $0 }
        END { if (cur != "") print cur }
    ' "$1"
}

apply_fragments() {
    local line n=0
    while IFS= read -r line; do
        postconf -e "$line"
        n=$((n + 1))
    done < <(main_cf_params "$FRAGMENTS/main.cf")
    echo "quorum-postfix: applied $n parameter(s) from postfix-conf/main.cf"
    # master.cf fragment: service lines (name type private unpriv chroot wakeup maxproc
    # command) and their "-o" continuation lines are added or replace the same service.
    if [[ -f $FRAGMENTS/master.cf ]] && grep -qv '^[[:space:]]*\(#.*\)\?$' "$FRAGMENTS/master.cf"; then
        local entry svc
        while IFS= read -r entry; do
            svc=$(awk '{ print $1 "/" $2 }' <<<"$entry")
            postconf -M "$svc=$entry"
            n=$((n + 1))
        done < <(main_cf_params "$FRAGMENTS/master.cf")
        echo "quorum-postfix: applied postfix-conf/master.cf"
    fi
}

if [[ ${1:-} == --health ]]; then
    exec 3<>/dev/tcp/127.0.0.1/25 || exit 1
    read -r -t 5 banner <&3 || exit 1
    printf 'QUIT\r\n' >&3
    [[ $banner == 220* ]]
    exit
fi

if [[ ${1:-} == --apply-fragments ]]; then
    apply_fragments
    exit 0
fi

QUORUM_MILTER=${QUORUM_MILTER:-inet:quorum:9900}
MYHOSTNAME=${POSTFIX_MYHOSTNAME:-mx.quorum.test}
RELAY_DOMAINS=${POSTFIX_RELAY_DOMAINS:-example.test}
RELAYHOST=${POSTFIX_RELAYHOST:-[sink]:25}
MYNETWORKS=${POSTFIX_MYNETWORKS:-127.0.0.0/8}
XCLIENT_HOSTS=${POSTFIX_XCLIENT_HOSTS:-}
TLS_CERT=${POSTFIX_TLS_CERT:-/etc/postfix/tls/cert.pem}
TLS_KEY=${POSTFIX_TLS_KEY:-/etc/postfix/tls/key.pem}

# The fragment's smtpd_milters names the harness's loopback address; point it at the
# quorum service instead, keeping its per-milter settings ({ addr, default_action=... }).
milters=$(postconf -h smtpd_milters)
if [[ -z $milters ]]; then
    echo "quorum-postfix: smtpd_milters is empty; postfix-conf/main.cf should set it" >&2
    exit 1
fi
milters=$(sed -E "s#(inet|inet6|unix|local):[^ ,}]+#${QUORUM_MILTER}#" <<<"$milters")

if [[ ! -s $TLS_CERT || ! -s $TLS_KEY ]]; then
    install -d -m 0755 "$(dirname "$TLS_CERT")" "$(dirname "$TLS_KEY")"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
        -subj "/CN=$MYHOSTNAME" -keyout "$TLS_KEY" -out "$TLS_CERT" 2>/dev/null
    chmod 0600 "$TLS_KEY"
    echo "quorum-postfix: generated a self-signed certificate for $MYHOSTNAME"
fi

postconf -e \
    "smtpd_milters = $milters" \
    "maillog_file = /dev/stdout" \
    "myhostname = $MYHOSTNAME" \
    "mydestination =" \
    "mynetworks = $MYNETWORKS" \
    "relay_domains = $RELAY_DOMAINS" \
    "relayhost = $RELAYHOST" \
    "smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination" \
    "smtp_host_lookup = dns, native" \
    "inet_protocols = ipv4" \
    "smtpd_authorized_xclient_hosts = $XCLIENT_HOSTS" \
    "smtpd_tls_cert_file = $TLS_CERT" \
    "smtpd_tls_key_file = $TLS_KEY" \
    "smtpd_tls_security_level = may"
# No chroot anywhere: smtpd and cleanup must resolve the compose service names
# (quorum, sink) through the container's resolver, which a chroot would hide.
postconf -F '*/*/chroot = n'
printf '%s\n' "$MYHOSTNAME" >/etc/mailname
newaliases

echo "quorum-postfix: myhostname=$MYHOSTNAME relay_domains=$RELAY_DOMAINS relayhost=$RELAYHOST"
echo "quorum-postfix: smtpd_milters = $milters"
# Locally submitted mail (sendmail/pickup) passes cleanup's non_smtpd_milters, not smtpd's.
non_smtpd=$(postconf -h non_smtpd_milters)
if [[ -z $non_smtpd ]]; then
    echo "quorum-postfix: WARNING: non_smtpd_milters is empty: mail submitted with sendmail(1)" \
        "would be queued unscanned; postfix-conf/main.cf sets it to \$smtpd_milters" >&2
else
    echo "quorum-postfix: non_smtpd_milters = $non_smtpd"
fi
postfix check
exec postfix start-fg
