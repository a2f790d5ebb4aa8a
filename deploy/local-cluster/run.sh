#!/usr/bin/env bash
# A local Ebb fleet: one coordinator and N workers as separate processes, on the
# local PostgreSQL and RabbitMQ, with a shared directory as the object store.
# Usage: deploy/local-cluster/run.sh [WORKERS] [CONFIG]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
workers="${1:-2}"
config="${2:-$here/ebb.yaml}"
data="${EBB_CLUSTER_DIR:-$root/target/local-cluster}"
pg="postgres://postgres@127.0.0.1:5432"

cargo build --quiet --manifest-path "$root/Cargo.toml" --bin ebb
ebb="$root/target/debug/ebb"
mkdir -p "$data/objects" "$data/logs"

# State DB of the coordinator, and the demo model if the default config is used.
psql -q "$pg/postgres" -tc "SELECT 1 FROM pg_database WHERE datname = 'ebb'" | grep -q 1 \
  || psql -q "$pg/postgres" -c "CREATE DATABASE ebb"
if [ "$config" = "$here/ebb.yaml" ]; then
  psql -q "$pg/postgres" -tc "SELECT 1 FROM pg_database WHERE datname = 'ebb_demo'" | grep -q 1 || {
    psql -q "$pg/postgres" -c "CREATE DATABASE ebb_demo"
    psql -q "$pg/ebb_demo" -c "CREATE TABLE people (id BIGINT PRIMARY KEY, email TEXT, name TEXT, score NUMERIC);
      CREATE TABLE people_copy (LIKE people INCLUDING ALL);
      INSERT INTO people SELECT g, 'p' || g || '@example.com', 'Person ' || g, g % 100 FROM generate_series(1, 100000) g;"
  }
fi

export EBB_QUEUE_URL="${EBB_QUEUE_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"
# The key the coordinator and the workers sign every task and result with.
export EBB_FLEET_KEY="${EBB_FLEET_KEY:-$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')}"
export EBB_LOG_FORMAT=text
pids=()
trap 'kill -TERM "${pids[@]}" 2>/dev/null; wait' EXIT INT TERM

"$ebb" coordinator --config "$config" --state-url "$pg/ebb" --listen 127.0.0.1:8080 \
  >"$data/logs/coordinator.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 50); do curl -fs http://127.0.0.1:8080/healthz >/dev/null && break; sleep 0.2; done
for i in $(seq 1 "$workers"); do
  "$ebb" worker --worker-id "worker-$i" --store-url "$data/objects" --coordinator-url http://127.0.0.1:8080 \
    >"$data/logs/worker-$i.log" 2>&1 &
  pids+=($!)
done
echo "coordinator on http://127.0.0.1:8080 with $workers workers; logs in $data/logs"
echo "try: curl -X POST http://127.0.0.1:8080/api/v1/syncs/demo-people/trigger"
wait
