#!/usr/bin/env bash
# Test certificates for the TLS engine's tests, made with the openssl command-line tool.
#
#   make_certs.sh DIR   creates DIR (if needed) and writes into it:
#
#   ca.crt ca.key                   the test CA ("Switchyard Test CA")
#   server.crt server.key           CN=localhost, SAN DNS:localhost, IP:127.0.0.1, signed by ca
#   client.crt client.key           CN=postgres (a client certificate), signed by ca
#   wrong-ca.crt wrong-ca.key       an unrelated CA ("Switchyard Wrong CA")
#   wrong-server.crt wrong-server.key  CN=localhost with the same SANs, signed by wrong-ca
#   expired.crt expired.key         CN=localhost with the same SANs, signed by ca, valid only
#                                   from 2020-01-01 to 2020-01-02
#
# Every key is EC P-256 (fast to make) and mode 0600. Certificates are valid for ten years.
# Nothing else is left in DIR but openssl's CA bookkeeping under DIR/.ca (used for the
# expired certificate: `openssl x509 -req` cannot back-date before OpenSSL 3.4).
set -euo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $(basename "$0") DIR" >&2
    exit 2
fi
dir=$1
mkdir -p "$dir"
cd "$dir"
umask 077

newkey() { # FILE
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null
    chmod 0600 "$1"
}

newca() { # NAME CN
    newkey "$1.key"
    openssl req -new -x509 -key "$1.key" -subj "/CN=$2" -days 3650 -sha256 \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -out "$1.crt"
}

cat > server.ext <<'EOF'
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:127.0.0.1
EOF
cat > client.ext <<'EOF'
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth
EOF

leaf() { # NAME CN CA EXTFILE
    newkey "$1.key"
    openssl req -new -key "$1.key" -subj "/CN=$2" -out "$1.csr"
    openssl x509 -req -in "$1.csr" -CA "$3.crt" -CAkey "$3.key" -set_serial "0x$(openssl rand -hex 8)" \
        -days 3650 -sha256 -extfile "$4" -out "$1.crt" 2>/dev/null
    rm -f "$1.csr"
}

newca ca "Switchyard Test CA"
newca wrong-ca "Switchyard Wrong CA"
leaf server localhost ca server.ext
leaf client postgres ca client.ext
leaf wrong-server localhost wrong-ca server.ext

# The expired certificate: `openssl ca` is the one subcommand of OpenSSL 3.0 that takes explicit
# start and end dates, and it wants a config file and a database.
mkdir -p .ca
: > .ca/index.txt
cat > .ca/ca.cnf <<EOF
[ca]
default_ca = test
[test]
database = .ca/index.txt
new_certs_dir = .ca
certificate = ca.crt
private_key = ca.key
default_md = sha256
policy = anything
copy_extensions = none
unique_subject = no
rand_serial = yes
[anything]
commonName = supplied
EOF
newkey expired.key
openssl req -new -key expired.key -subj "/CN=localhost" -out expired.csr
openssl ca -batch -config .ca/ca.cnf -notext -startdate 20200101000000Z -enddate 20200102000000Z \
    -extfile server.ext -in expired.csr -out expired.crt 2>/dev/null
rm -f expired.csr server.ext client.ext
chmod 0644 ./*.crt
