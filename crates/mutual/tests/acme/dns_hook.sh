#!/bin/sh
# certbot --manual-auth-hook for the dns-01 test: publish the TXT value certbot hands over in
# the directory dns_server.py serves from ($DNS_DIR, one file per name, one record per line);
# $DNS_VALUE_PREFIX spoils the value (the negative case).
set -eu
echo "${DNS_VALUE_PREFIX:-}$CERTBOT_VALIDATION" >> "$DNS_DIR/_acme-challenge.$CERTBOT_DOMAIN"
