#!/usr/bin/env bash
# Starts the three local agents in the background and forms the cluster.
# Logs go to data/nodeN.log; stop them with ./stop.sh.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if [ -n "${VANTAGE_BIN:-}" ]; then
  bin=$VANTAGE_BIN
else
  (cd "$here/../.." && cargo build --release --quiet)
  bin="$here/../../target/release/vantage"
fi
mkdir -p "$here/data"
# The cluster's CA, the three node certificates and an operator's, made once.
certs="$here/certs"
if [ ! -f "$certs/ca.key" ]; then
  "$bin" tls ca --dir "$certs" --cluster local
  for i in 1 2 3; do "$bin" tls node --dir "$certs" --id "$i" --addr "127.0.0.1:710$i"; done
  "$bin" tls client --dir "$certs" --name operator --role operator
fi
export VANTAGE_CA="$certs/ca.pem" VANTAGE_CERT="$certs/operator.pem" VANTAGE_KEY="$certs/operator.key"
for i in 1 2 3; do
  "$bin" run --config "$here/node$i.toml" >"$here/data/node$i.log" 2>&1 &
  echo $! >"$here/data/node$i.pid"
done
"$bin" cluster bootstrap --config "$here/node1.toml"
echo
"$bin" cluster status --addr 127.0.0.1:7102
echo
echo "The CLI needs the operator's certificate:"
echo "  export VANTAGE_CA=$VANTAGE_CA VANTAGE_CERT=$VANTAGE_CERT VANTAGE_KEY=$VANTAGE_KEY"
echo "Try: $bin endpoints --addr 127.0.0.1:7101; kill one agent (data/nodeN.pid) and watch"
echo "     $bin cluster status --addr 127.0.0.1:7101. Stop all with $here/stop.sh"
