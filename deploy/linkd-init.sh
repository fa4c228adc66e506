#!/bin/sh
# compose's one-shot `linkd-init` service (also runnable by hand): a self-signed CA and a server certificate
# for linkd's SASL_SSL listeners, and linkd's admin user (SCRAM-SHA-512) from a secret file.
# Idempotent: an existing certificate is kept; the user's password is set again from the secret.
# Paths and names come from the environment (the compose defaults below), so a test can run this script
# against temporary directories.
set -eu
tls=${LINKD_TLS_DIR:-/etc/linkd/tls}
data=${LINKD_DATA_DIR:-/var/lib/linkd}
secret=${LINKD_ADMIN_PASSWORD_FILE:-/run/secrets/linkd_admin_password}
user=${LINKD_INIT_USER:-admin}
names=${LINKD_TLS_SAN:-DNS:linkd,DNS:localhost,IP:127.0.0.1}
days=${LINKD_TLS_DAYS:-825}

# As root (compose runs this service as root so it can read the secret and own the volumes' files),
# everything linkd later reads is created as the unprivileged `linkd` user.
# (Run by hand as another user, or where no `linkd` user exists, it runs as whoever runs it.)
drop=no
if [ "$(id -u)" = 0 ] && id linkd >/dev/null 2>&1; then drop=yes; fi
as_linkd() { if [ "$drop" = yes ]; then runuser -u linkd -- "$@"; else "$@"; fi; }

if [ ! -s "$secret" ]; then
  echo "linkd-init: no admin password in $secret (create it first, see docs/operator-guide.md)" >&2
  exit 1
fi
mkdir -p "$tls"
if [ ! -s "$tls/server-keystore.pem" ]; then
  umask 077
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days "$days" \
    -subj "/CN=linkd compose CA" -keyout "$tls/ca.key" -out "$tls/ca.pem" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -subj "/CN=linkd" -keyout "$tls/server.key" -out "$tls/server.csr" 2>/dev/null
  printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=%s\n' "$names" > "$tls/server.ext"
  openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" -CAcreateserial \
    -days "$days" -extfile "$tls/server.ext" -out "$tls/server.pem" 2>/dev/null
  # Kafka's ssl.keystore.type=PEM: the certificate chain and the key in one file.
  cat "$tls/server.pem" "$tls/ca.pem" "$tls/server.key" > "$tls/server-keystore.pem"
  rm -f "$tls/server.csr" "$tls/server.ext" "$tls/ca.srl"
  chmod 0644 "$tls/ca.pem" "$tls/server.pem"
  echo "linkd-init: made a CA and a server certificate for $names in $tls"
fi
mkdir -p "$data"
if [ "$drop" = yes ]; then chown -R linkd:linkd "$tls" "$data"; fi
# The password goes in on stdin (opened here, so the unprivileged user need not read the secret file).
as_linkd linkd user add "$user" --data-dir "$data" --mechanism SCRAM-SHA-512 < "$secret"
