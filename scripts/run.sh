#!/usr/bin/env bash
# `make run`: the whole chain on this machine, stopped together on Ctrl-C or SIGTERM.
#
#   KAFKA_BROKERS unset -> the sidecar starts an embedded Kafka-protocol broker with the
#                          topic; a throwaway PostgreSQL cluster gets the outbox tables,
#                          the outbox publisher moves its rows to the broker, and a demo
#                          stand-in for the CRM writes DEMO_RATE events/s (default 5)
#                          into the outbox: commit -> Kafka -> Redis -> browser.
#   KAFKA_BROKERS set   -> the sidecar relays that cluster's KAFKA_TOPIC (KAFKA_PROP_*
#                          pass through); no demo events. With DATABASE_URL set too, the
#                          publisher publishes that database's outbox to it.
#   DATABASE_URL set    -> that Postgres holds the outbox (migrated at start); otherwise
#                          a throwaway cluster is started here (Debian's initdb/pg_ctl).
#   REDIS_URL set       -> that Redis is used; otherwise a redis-server is started here.
#   The app runs under `spin up` when the Spin CLI is installed, otherwise under the
#   project's wasmtime host serving the same spin.toml.
#   Access control stays on: unless SPIN_VARIABLE_AUTH_* configures it, the script makes
#   a demo key pair and an operator token (every tenant, may publish, 8 h) in AUTH_DIR
#   (default target/run-auth).
#
# Ports (each checked free before anything starts): PORT (app, 3000), SIDECAR_PORT
# (9090), PUBLISHER_PORT (9094), REDIS_PORT (6390), PG_PORT (5439).
set -euo pipefail
# Started in the background from a script (`bash scripts/run.sh &`), bash begins with
# SIGINT ignored and could not trap it: start again with its default disposition, so
# Ctrl-C and `kill -INT` stop everything as SIGTERM does.
if [ -z "${CRM_EVENTS_RUN_SIGNALS:-}" ]; then
  export CRM_EVENTS_RUN_SIGNALS=1
  exec env --default-signal=INT "$BASH" "$0" "$@"
fi
cd "$(dirname "$0")/.."

PORT=${PORT:-3000}
SIDECAR_PORT=${SIDECAR_PORT:-9090}
PUBLISHER_PORT=${PUBLISHER_PORT:-9094}
REDIS_PORT=${REDIS_PORT:-6390}
PG_PORT=${PG_PORT:-5439}
BIN=${BIN:-target/release}
RUN_DIR=$(mktemp -d "${TMPDIR:-/tmp}/crm-events-run.XXXXXX")

pids=()
names=()
pg_ctl_bin=""
pg_data=""
as_postgres=()

# The whole stop is bounded: children get SIGTERM newest first and each may finish
# its graceful stop (the sidecar's is SHUTDOWN_TIMEOUT_SECONDS, 10 s), but whatever
# still runs STOP_SECONDS (12) after Ctrl-C is killed, and so is Postgres.
STOP_SECONDS=${STOP_SECONDS:-12}

# Stops one child: SIGTERM, then SIGKILL once the stop's deadline has passed.
stop_one() {
  local pid=$1 deadline=$2
  kill -TERM "$pid" 2>/dev/null || return 0
  while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

# Stops the throwaway Postgres in what is left of the deadline (at least 2 s), then
# immediately (no checkpoint: the cluster is thrown away).
stop_postgres() {
  local left=$(($1 - SECONDS))
  [ "$left" -ge 2 ] || left=2
  "${as_postgres[@]}" "$pg_ctl_bin" -D "$pg_data" -m fast -w -t "$left" stop >/dev/null 2>&1 ||
    "${as_postgres[@]}" "$pg_ctl_bin" -D "$pg_data" -m immediate -w -t 5 stop >/dev/null 2>&1 || true
}

# Stops everything, newest first (the app and the demo before the publisher, the
# publisher before the sidecar whose embedded broker it talks to), before saying
# anything (a closed stdout must not keep them alive).
stop() {
  trap - EXIT INT TERM
  local i deadline=$((SECONDS + STOP_SECONDS))
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do stop_one "${pids[$i]}" "$deadline"; done
  [ -z "$pg_data" ] || stop_postgres "$deadline"
  rm -rf "$RUN_DIR"
  echo "run: stopped" 2>/dev/null || true
}
trap stop EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
# A closed stdout (`make run | head`) must not kill the script before it stops the rest.
trap '' PIPE

say() { echo "run: $*" 2>/dev/null || true; }
fail() { say "$*"; exit 1; }

for binary in crm-events-sidecar crm-events-outbox crm-events-host; do
  [ -x "$BIN/$binary" ] || fail "$BIN/$binary is missing: run make run (it builds the release binaries), or set BIN"
done

# A port is taken when something accepts a connection on it.
check_free() {
  local port=$1 variable=$2
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    fail "port $port is taken (by another program): set $variable to another port"
  fi
}

start() {
  local name=$1
  shift
  "$@" &
  pids+=($!)
  names+=("$name")
}

# Fails, naming it, when a started process has died.
check_alive() {
  local i
  for i in "${!pids[@]}"; do
    kill -0 "${pids[$i]}" 2>/dev/null || fail "${names[$i]} exited during start (see its output above)"
  done
}

# Waits for http://127.0.0.1:$2/readyz to answer 200.
wait_ready() {
  local name=$1 port=$2
  for _ in $(seq 1 600); do
    curl -fsS -o /dev/null "http://127.0.0.1:$port/readyz" 2>/dev/null && return 0
    check_alive
    sleep 0.1
  done
  fail "$name is not ready after 60 s: http://127.0.0.1:$port/readyz"
}

check_free "$PORT" PORT
check_free "$SIDECAR_PORT" SIDECAR_PORT
[ -n "${REDIS_URL:-}" ] || check_free "$REDIS_PORT" REDIS_PORT
[ -n "${DATABASE_URL:-}" ] || [ -n "${KAFKA_BROKERS:-}" ] || check_free "$PG_PORT" PG_PORT
[ -n "${DATABASE_URL:-}" ] || [ -z "${KAFKA_BROKERS:-}" ] || PUBLISHER_PORT=""
[ -z "$PUBLISHER_PORT" ] || check_free "$PUBLISHER_PORT" PUBLISHER_PORT

# Redis.
if [ -z "${REDIS_URL:-}" ]; then
  start redis-server redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$RUN_DIR" \
    --save "" --appendonly no --logfile "$RUN_DIR/redis.log"
  REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
  for _ in $(seq 1 100); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; check_alive; sleep 0.1; done
fi
redis_host=${REDIS_URL#*://}
redis_host=${redis_host#*@}
redis_host=${redis_host%%/*}

# PostgreSQL: a throwaway cluster unless DATABASE_URL names one (and none with an
# external Kafka: the demo never writes into someone's topic).
start_postgres() {
  local bin
  bin=${PG_BIN:-$(dirname "$(readlink -f "$(command -v initdb 2>/dev/null || echo /nonexistent)")")}
  [ -x "$bin/initdb" ] || bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -x "$bin/initdb" ] || fail "PostgreSQL's initdb not found: run scripts/setup.sh, or set DATABASE_URL or PG_BIN"
  pg_ctl_bin="$bin/pg_ctl"
  pg_data="$RUN_DIR/pg"
  mkdir -p "$pg_data"
  if [ "$(id -u)" -eq 0 ]; then
    # PostgreSQL refuses to run as root: the Debian package's postgres user runs it.
    as_postgres=(runuser -u postgres --)
    chown postgres: "$RUN_DIR" "$pg_data"
  fi
  "${as_postgres[@]}" "$bin/initdb" -D "$pg_data" -U postgres --auth=trust -E UTF8 >"$RUN_DIR/initdb.log" 2>&1 \
    || fail "initdb failed: $(tail -n 3 "$RUN_DIR/initdb.log")"
  "${as_postgres[@]}" "$pg_ctl_bin" -D "$pg_data" -l "$RUN_DIR/postgres.log" -w -o \
    "-p $PG_PORT -c listen_addresses=127.0.0.1 -c unix_socket_directories=$pg_data" start >/dev/null \
    || fail "PostgreSQL did not start: $(tail -n 3 "$RUN_DIR/postgres.log")"
  "${as_postgres[@]}" "$bin/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -qAt \
    -c "CREATE ROLE crm_events LOGIN" -c "CREATE DATABASE crm OWNER crm_events" postgres >/dev/null
  DATABASE_URL="postgres://crm_events@127.0.0.1:$PG_PORT/crm"
}
if [ -z "${DATABASE_URL:-}" ] && [ -z "${KAFKA_BROKERS:-}" ]; then
  start_postgres
fi

# Access control: a demo key pair and operator token unless auth is configured.
AUTH_DIR=${AUTH_DIR:-target/run-auth}
auth_desc="configured by SPIN_VARIABLE_AUTH_*"
if [ -z "${SPIN_VARIABLE_AUTH_PUBLIC_KEYS:-}${SPIN_VARIABLE_AUTH_JWKS:-}${SPIN_VARIABLE_AUTH_HS256_SECRET:-}" ] \
   && [ "${SPIN_VARIABLE_AUTH_MODE:-jwt}" = "jwt" ]; then
  mkdir -p "$AUTH_DIR"
  "$BIN/crm-events-sidecar" keygen --out "$AUTH_DIR" >/dev/null
  (umask 077; "$BIN/crm-events-sidecar" token --key "$AUTH_DIR/private.pem" \
    --sub operator --tenant '*' --permission publish --ttl 8h > "$AUTH_DIR/token" 2>/dev/null)
  SPIN_VARIABLE_AUTH_PUBLIC_KEYS=$(cat "$AUTH_DIR/public.pem")
  export SPIN_VARIABLE_AUTH_PUBLIC_KEYS
  auth_desc="demo key pair in $AUTH_DIR (operator token: every tenant, may publish, 8 h)"
fi

# The sidecar, with the embedded broker unless KAFKA_BROKERS is given.
sidecar_args=()
if [ -z "${KAFKA_BROKERS:-}" ]; then
  sidecar_args+=(--embedded-kafka --embedded-kafka-file "$RUN_DIR/kafka" --demo-rate 0)
  kafka_desc="embedded broker; a demo CRM writes ${DEMO_RATE:-5} events/s into the outbox"
else
  kafka_desc="$KAFKA_BROKERS"
fi
REDIS_URL="$REDIS_URL" HTTP_LISTEN="127.0.0.1:$SIDECAR_PORT" DEMO_RATE=0 \
  start sidecar "$BIN/crm-events-sidecar" run "${sidecar_args[@]}"
brokers=${KAFKA_BROKERS:-}
if [ -z "$brokers" ]; then
  for _ in $(seq 1 300); do [ -s "$RUN_DIR/kafka" ] && break; check_alive; sleep 0.1; done
  [ -s "$RUN_DIR/kafka" ] || fail "the embedded Kafka broker did not start"
  brokers=$(cat "$RUN_DIR/kafka")
fi

# The outbox publisher (it applies the migrations), and the demo CRM.
outbox_desc="off (set DATABASE_URL to publish a database's outbox)"
if [ -n "$PUBLISHER_PORT" ]; then
  # Batches of 1,000 rows carry a DEMO_RATE of 10,000/s on 2 cores (100 carry ~4,000).
  DATABASE_URL="$DATABASE_URL" KAFKA_BROKERS="$brokers" HTTP_LISTEN="127.0.0.1:$PUBLISHER_PORT" \
    OUTBOX_BATCH_SIZE="${OUTBOX_BATCH_SIZE:-1000}" start publisher "$BIN/crm-events-outbox" run
  # Shown without credentials or options.
  rest=${DATABASE_URL#*://}
  outbox_desc="${DATABASE_URL%%://*}://${rest#*@}"
  outbox_desc=${outbox_desc%%\?*}
  wait_ready publisher "$PUBLISHER_PORT"
  if [ -z "${KAFKA_BROKERS:-}" ]; then
    DATABASE_URL="$DATABASE_URL" start demo "$BIN/crm-events-outbox" demo --rate "${DEMO_RATE:-5}"
  fi
fi

# The app.
pg_host="127.0.0.1:$PG_PORT"
if command -v spin >/dev/null 2>&1; then
  runtime="spin up"
  SPIN_VARIABLE_REDIS_HOST="$redis_host" SPIN_VARIABLE_KAFKA_BROKERS="${KAFKA_BROKERS:-embedded}" \
    SPIN_VARIABLE_POSTGRES_HOST="$pg_host" SPIN_VARIABLE_POSTGRES_SSLMODE=disable \
    start app spin up --listen "127.0.0.1:$PORT"
else
  runtime="the wasmtime host (crm-events-host; install the Spin CLI to use spin up)"
  SPIN_VARIABLE_KAFKA_BROKERS="${KAFKA_BROKERS:-embedded}" \
    SPIN_VARIABLE_POSTGRES_HOST="$pg_host" SPIN_VARIABLE_POSTGRES_SSLMODE=disable \
    start app "$BIN/crm-events-host" --manifest spin.toml --listen "127.0.0.1:$PORT" \
    --variable "redis_host=$redis_host" --tcp-nodelay
fi

wait_ready sidecar "$SIDECAR_PORT"
wait_ready app "$PORT"
check_alive

token_hint="\$(cat $AUTH_DIR/token)"
cat <<MSG 2>/dev/null || true

crm-events is running
  app        http://127.0.0.1:$PORT/            ($runtime)
  auth       $auth_desc
  stream     curl -N -H "Authorization: Bearer $token_hint" http://127.0.0.1:$PORT/crm-events
  publish    curl -H "Authorization: Bearer $token_hint" -H 'Idempotency-Key: demo-1' -H 'Content-Type: application/json' \\
               -d '{"type":"JobCreated","tenant_id":"3f8a1c2e-6b4d-4e8f-9a1b-2c3d4e5f6a70","payload":{"JobId":"job-x"}}' http://127.0.0.1:$PORT/crm-events
  viewer     http://127.0.0.1:$PORT/ops/crm-events  (sign in with the token in $AUTH_DIR/token)
  tokens     $BIN/crm-events-sidecar token --key $AUTH_DIR/private.pem --sub <who> --tenant <tenant uuid> --ttl 1h
  metrics    http://127.0.0.1:$PORT/metrics   sidecar http://127.0.0.1:$SIDECAR_PORT/metrics   publisher ${PUBLISHER_PORT:+http://127.0.0.1:$PUBLISHER_PORT/metrics}
  kafka      $kafka_desc
  outbox     $outbox_desc
  redis      $REDIS_URL
Ctrl-C stops everything.
MSG
wait -n "${pids[@]}" || true
check_alive
