#!/usr/bin/env bash
# Makes the compose cluster's certificates in cluster-configs/docker/certs:
# the CA (its key stays on this host), the three node certificates and an
# operator's for the CLI. The node keys are handed to the image's user
# (65534), which alone may read them.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${VANTAGE_BIN:-"$here/../../target/release/vantage"}
certs="$here/certs"
"$bin" tls ca --dir "$certs" --cluster compose
for i in 1 2 3; do
  "$bin" tls node --dir "$certs" --id "$i" --addr "172.28.0.1$i:7101"
  chown 65534:65534 "$certs/node$i.key"
done
"$bin" tls client --dir "$certs" --name operator --role operator
echo "CLI: export VANTAGE_CA=$certs/ca.pem VANTAGE_CERT=$certs/operator.pem VANTAGE_KEY=$certs/operator.key"
