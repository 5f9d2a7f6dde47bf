#!/bin/sh
# Entrypoint of the Hive image. One process per container:
#   sshd     (default) make host keys if missing, `hive apply`, then sshd in the foreground
#   watch    `hive watch` (a second container on the same volumes, see compose.yaml)
#   stats | notify | report | plan | apply | ...   any other hive command, once
#   slapd    the optional OpenLDAP server (compose profile "ldap"), first start seeds it
# Settings: HIVE_CONFIG (default /etc/hive/hive.yaml); for slapd, LDAP_SUFFIX and the
# secrets files named below; for nslcd beside sshd, HIVE_NSLCD_URI (compose.ldap.yaml) or a
# mounted /etc/nslcd.conf.
set -eu
export HIVE_CONFIG="${HIVE_CONFIG:-/etc/hive/hive.yaml}"
SECRETS="${HIVE_SECRETS_DIR:-/run/secrets}"

say() { echo "hive-entrypoint: $*" >&2; }

# A secret as Hive reads bind_password_file: its first line, without the newline an `echo`
# or an editor adds. The slapd hash and nslcd.conf must hold exactly that, or binds fail.
secret() {
    [ -s "$SECRETS/$1" ] || { say "missing secret $SECRETS/$1"; exit 1; }
    head -n 1 "$SECRETS/$1" | tr -d '\n'
}

wait_for_config() {
    # A first start before hive.yaml exists: say what to do and wait, instead of failing
    # and being restarted for ever by `restart: unless-stopped`.
    [ -f "$HIVE_CONFIG" ] && return
    say "no $HIVE_CONFIG yet. Put your hive.yaml there (with compose: in" \
        "deploy/docker/config/, e.g. cp ../hive.yaml config/ and edit it); waiting for it."
    while [ ! -f "$HIVE_CONFIG" ]; do
        sleep "${HIVE_WAIT_SECONDS:-10}"
    done
    say "found $HIVE_CONFIG"
}

start_nslcd() {
    # identity: ldap. compose.ldap.yaml sets HIVE_NSLCD_URI: nslcd.conf is made here from
    # the shipped deploy/ldap/nslcd.conf with the bind password from the secret (plain
    # ldap:// on the compose network, so its TLS lines are left out). A directory elsewhere:
    # mount your own /etc/nslcd.conf (0640 root:nslcd). Either way nsswitch gets the shipped
    # `ldap` edit (deploy/ldap/nsswitch.conf) and nslcd runs beside sshd.
    if [ -n "${HIVE_NSLCD_URI:-}" ]; then
        suffix="${LDAP_SUFFIX:-dc=example,dc=org}"
        pw=$(secret ldap_nslcd_password)
        umask 027
        sed -e "s#^uri .*#uri $HIVE_NSLCD_URI#" -e "s/dc=example,dc=org/$suffix/g" \
            -e '/^tls_/d' -e '/^bindpw /d' /opt/hive/src/deploy/ldap/nslcd.conf > /etc/nslcd.conf
        printf 'bindpw %s\n' "$pw" >> /etc/nslcd.conf
        umask 022
        chown root:nslcd /etc/nslcd.conf
    fi
    if [ -f /etc/nslcd.conf ] && grep -q '^uri' /etc/nslcd.conf; then
        sed -i -E '/^(passwd|group|shadow):/{/[[:space:]]ldap([[:space:]]|$)/!s/^([a-z]+:[[:space:]]+files)([[:space:]]|$)/\1 ldap\2/}' /etc/nsswitch.conf
        mkdir -p /run/nslcd && chown nslcd:nslcd /run/nslcd
        nslcd
    fi
}

seed_slapd() {
    suffix="${LDAP_SUFFIX:-dc=example,dc=org}"
    conf=/var/lib/ldap/slapd.conf
    if [ ! -f "$conf" ]; then
        # slappasswd -T hashes a file as it is, newline included: hash the stripped text.
        tmp=$(mktemp)
        hash() { secret "$1" > "$tmp" || exit 1; slappasswd -T "$tmp"; }
        admin=$(hash ldap_admin_password)
        hive_pw=$(hash ldap_hive_password)
        nslcd_pw=$(hash ldap_nslcd_password)
        rm -f "$tmp"
        mkdir -p /var/lib/ldap/db
        cat > "$conf" <<CONF
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/nis.schema
include /etc/ldap/schema/inetorgperson.schema
modulepath /usr/lib/ldap
moduleload back_mdb
pidfile /run/slapd/slapd.pid
database mdb
suffix "$suffix"
rootdn "cn=admin,$suffix"
rootpw $admin
directory /var/lib/ldap/db
limits dn.exact="cn=hive,ou=services,$suffix" size=unlimited
# As deploy/ldap/acl.ldif: Hive writes people and groups, nslcd reads, nobody else sees.
access to attrs=userPassword by self =xw by anonymous auth by * none
access to dn.subtree="ou=people,$suffix" by dn.exact="cn=hive,ou=services,$suffix" write by dn.exact="cn=nslcd,ou=services,$suffix" read by * none
access to dn.subtree="ou=groups,$suffix" by dn.exact="cn=hive,ou=services,$suffix" write by dn.exact="cn=nslcd,ou=services,$suffix" read by * none
access to * by dn.exact="cn=hive,ou=services,$suffix" read by dn.exact="cn=nslcd,ou=services,$suffix" read by * none
CONF
        chmod 0600 "$conf"
        sed -e "s/dc=example,dc=org/$suffix/g" \
            -e "0,/{SSHA}REPLACE[^ ]*/s##$hive_pw#" \
            -e "0,/{SSHA}REPLACE[^ ]*/s##$nslcd_pw#" \
            /opt/hive/src/deploy/ldap/base.ldif > /tmp/base.ldif
        # The suffix entry itself, then Hive's base entries.
        dc=$(echo "$suffix" | sed -E 's/^dc=([^,]+).*/\1/')
        printf 'dn: %s\nobjectClass: dcObject\nobjectClass: organization\no: %s\ndc: %s\n\n' \
            "$suffix" "$dc" "$dc" | cat - /tmp/base.ldif > /tmp/seed.ldif
        slapadd -f "$conf" -l /tmp/seed.ldif
        rm -f /tmp/base.ldif /tmp/seed.ldif
        chown -R openldap:openldap /var/lib/ldap
    fi
    mkdir -p /run/slapd && chown openldap:openldap /run/slapd
    exec slapd -d 0 -u openldap -g openldap -f "$conf" -h "ldap:///"
}

case "${1:-sshd}" in
    sshd)
        for kind in ed25519 rsa; do
            key="/etc/ssh/hostkeys/ssh_host_${kind}_key"
            [ -f "$key" ] || ssh-keygen -q -t "$kind" -N '' -f "$key"
        done
        start_nslcd
        wait_for_config
        # Converge on every start; CI applies later changes with `docker compose exec`.
        # A failed apply (a bad file, the directory not up yet) is shown and sshd serves
        # what the last good apply wrote, as a server does when CI's apply fails.
        hive apply || say "hive apply failed (above): sshd serves the last applied state;" \
            "fix hive.yaml, then: docker compose exec hive hive apply"
        exec /usr/sbin/sshd -D -e
        ;;
    watch)
        wait_for_config
        exec hive watch
        ;;
    slapd)
        seed_slapd
        ;;
    validate|plan|apply|history|stats|status|notify|report|rollback|purge|schema)
        exec hive "$@"
        ;;
    *)
        exec "$@"
        ;;
esac
