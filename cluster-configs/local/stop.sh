#!/usr/bin/env bash
# Stops the agents started by start.sh (their data stays in data/).
here=$(cd "$(dirname "$0")" && pwd)
for i in 1 2 3; do
  pid_file="$here/data/node$i.pid"
  [ -f "$pid_file" ] && kill "$(cat "$pid_file")" 2>/dev/null
  rm -f "$pid_file"
done
exit 0
