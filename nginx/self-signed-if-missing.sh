#!/bin/sh
# Runs before nginx starts (the image's /docker-entrypoint.d/). With no certificate mounted in
# /etc/nginx/certs, make a self-signed one there so HTTPS answers at once; mount your own
# server.pem and server.key (see README: TLS) for clients to trust it.
set -eu
certs=/etc/nginx/certs
if [ ! -s "$certs/server.pem" ] || [ ! -s "$certs/server.key" ]; then
    echo "infergate: no certificate in $certs: using a self-signed one for localhost"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 825 \
        -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
        -keyout /tmp/server.key -out /tmp/server.pem 2>/dev/null
    cp /tmp/server.pem /tmp/server.key "$certs/" 2>/dev/null || {
        echo "infergate: $certs is read-only and empty: mount server.pem and server.key" >&2
        exit 1
    }
fi
