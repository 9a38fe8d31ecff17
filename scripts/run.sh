#!/usr/bin/env bash
# `make run`: Redis, the sidecar and the app, on this machine, stopped together on Ctrl-C.
#
#   KAFKA_BROKERS unset -> the sidecar starts an embedded Kafka-protocol broker with the
#                          topic and a demo producer (DEMO_RATE events/s, default 5).
#   KAFKA_BROKERS set   -> it relays that cluster's KAFKA_TOPIC (KAFKA_PROP_* pass through).
#   REDIS_URL set       -> that Redis is used; otherwise a redis-server is started here.
#   The app runs under `spin up` when the Spin CLI is installed, otherwise under the
#   project's wasmtime host serving the same spin.toml.
#   Access control stays on: unless SPIN_VARIABLE_AUTH_* configures it, the script makes
#   a demo key pair and an operator token (every tenant, 8 h) in AUTH_DIR
#   (default target/run-auth) and prints how to use it.
set -euo pipefail
cd "$(dirname "$0")/.."

PORT=${PORT:-3000}
SIDECAR_PORT=${SIDECAR_PORT:-9090}
REDIS_PORT=${REDIS_PORT:-6390}
BIN=${BIN:-target/debug}

pids=()
stop() {
  trap - EXIT INT TERM
  echo
  echo "run: stopping"
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop EXIT INT TERM

if [ -z "${REDIS_URL:-}" ]; then
  redis_dir=$(mktemp -d)
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$redis_dir" --save "" --appendonly no \
    --logfile "$redis_dir/redis.log" &
  pids+=($!)
  REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
  for _ in $(seq 1 100); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
fi
redis_host=${REDIS_URL#*://}
redis_host=${redis_host#*@}
redis_host=${redis_host%%/*}

# Access control: a demo key pair and operator token unless auth is configured.
AUTH_DIR=${AUTH_DIR:-target/run-auth}
auth_desc="configured by SPIN_VARIABLE_AUTH_*"
if [ -z "${SPIN_VARIABLE_AUTH_PUBLIC_KEYS:-}${SPIN_VARIABLE_AUTH_JWKS:-}${SPIN_VARIABLE_AUTH_HS256_SECRET:-}" ] \
   && [ "${SPIN_VARIABLE_AUTH_MODE:-jwt}" = "jwt" ]; then
  mkdir -p "$AUTH_DIR"
  "$BIN/crm-events-sidecar" keygen --out "$AUTH_DIR" >/dev/null
  (umask 077; "$BIN/crm-events-sidecar" token --key "$AUTH_DIR/private.pem" \
    --sub operator --tenant '*' --ttl 8h > "$AUTH_DIR/token")
  SPIN_VARIABLE_AUTH_PUBLIC_KEYS=$(cat "$AUTH_DIR/public.pem")
  export SPIN_VARIABLE_AUTH_PUBLIC_KEYS
  auth_desc="demo key pair in $AUTH_DIR (operator token: every tenant, 8 h)"
fi

sidecar_args=()
if [ -z "${KAFKA_BROKERS:-}" ]; then
  sidecar_args+=(--embedded-kafka)
  kafka_desc="embedded broker with a demo producer (${DEMO_RATE:-5} events/s)"
else
  kafka_desc="$KAFKA_BROKERS"
fi
REDIS_URL="$REDIS_URL" HTTP_LISTEN="127.0.0.1:$SIDECAR_PORT" "$BIN/crm-events-sidecar" run "${sidecar_args[@]}" &
pids+=($!)

if command -v spin >/dev/null 2>&1; then
  runtime="spin up"
  SPIN_VARIABLE_REDIS_HOST="$redis_host" SPIN_VARIABLE_KAFKA_BROKERS="${KAFKA_BROKERS:-embedded}" \
    spin up --listen "127.0.0.1:$PORT" &
else
  runtime="the wasmtime test host (crm-events-host; install the Spin CLI to use spin up)"
  SPIN_VARIABLE_KAFKA_BROKERS="${KAFKA_BROKERS:-embedded}" "$BIN/crm-events-host" \
    --manifest spin.toml --listen "127.0.0.1:$PORT" --variable "redis_host=$redis_host" &
fi
pids+=($!)

for _ in $(seq 1 600); do
  curl -fsS "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
cat <<MSG

crm-events is running
  app        http://127.0.0.1:$PORT/            ($runtime)
  auth       $auth_desc
  stream     curl -N -H "Authorization: Bearer \$(cat $AUTH_DIR/token)" http://127.0.0.1:$PORT/crm-events
  viewer     http://127.0.0.1:$PORT/ops/crm-events  (sign in with the token in $AUTH_DIR/token)
  tokens     $BIN/crm-events-sidecar token --key $AUTH_DIR/private.pem --tenant tenant-acme --ttl 1h
  metrics    http://127.0.0.1:$PORT/metrics
  sidecar    http://127.0.0.1:$SIDECAR_PORT/readyz  http://127.0.0.1:$SIDECAR_PORT/metrics
  kafka      $kafka_desc
  redis      $REDIS_URL
Ctrl-C stops everything.
MSG
wait -n "${pids[@]}"
