#!/bin/sh
# Entrypoint of the Hive image. One process per container:
#   sshd     (default) make host keys if missing, `hive apply`, then sshd in the foreground
#   watch    `hive watch` (a second container on the same volumes, see compose.yaml)
#   stats | notify | report | plan | apply | ...   any other hive command, once
#   slapd    the optional OpenLDAP server (compose profile "ldap"), first start seeds it
# Settings: HIVE_CONFIG (default /etc/hive/hive.yaml); for slapd, LDAP_SUFFIX and the
# secrets files named below.
set -eu
export HIVE_CONFIG="${HIVE_CONFIG:-/etc/hive/hive.yaml}"

start_nslcd() {
    # With identity: ldap, /etc/nslcd.conf is mounted (deploy/ldap/nslcd.conf) and nsswitch
    # must say `ldap`: switch it and run nslcd beside sshd.
    if [ -f /etc/nslcd.conf ] && grep -q '^uri' /etc/nslcd.conf; then
        sed -i -E 's/^(passwd|group|shadow):.*/\1:         files ldap/' /etc/nsswitch.conf
        mkdir -p /run/nslcd && chown nslcd:nslcd /run/nslcd
        nslcd
    fi
}

seed_slapd() {
    suffix="${LDAP_SUFFIX:-dc=example,dc=org}"
    conf=/var/lib/ldap/slapd.conf
    if [ ! -f "$conf" ]; then
        admin=$(slappasswd -T /run/secrets/ldap_admin_password)
        hive_pw=$(slappasswd -T /run/secrets/ldap_hive_password)
        nslcd_pw=$(slappasswd -T /run/secrets/ldap_nslcd_password)
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
            /opt/hive/deploy/ldap/base.ldif > /tmp/base.ldif
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
        # Converge on every start; CI applies later changes with `docker compose exec`.
        hive apply
        exec /usr/sbin/sshd -D -e
        ;;
    watch)
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
