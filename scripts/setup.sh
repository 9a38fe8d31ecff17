#!/usr/bin/env bash
# Installs what a fresh Debian machine with Rust lacks to build, test and run
# crm-events, and nothing more:
#   redis-server; PostgreSQL's server binaries (initdb, pg_ctl) without a cluster of
#   their own (no server is started on 5432); the C toolchain pieces librdkafka needs;
#   the wasm32-wasip2 target; promtool alone, unpacked from Debian's prometheus
#   package into target/tools/bin (installing the package would start a Prometheus
#   server on :9090, the sidecar's port);
#   with --test also Chromium, Node.js (20 or newer), and the npm packages of the
#   browser and API tests (tests/browser: playwright-core, the OpenAPI and AsyncAPI
#   validators, Ajv) and of the TypeScript client (clients/typescript: typescript,
#   json-schema-to-typescript);
#   with --docs mdbook (crates.io) and linkchecker (Debian) for make docs;
#   with --lint also cargo-machete (unused dependencies);
#   with --bench nginx and its Nchan module, unpacked (the benchmarks' reference);
#   with --fuzz cargo-fuzz (make fuzz).
# Safe to run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi
TOOLS=target/tools/bin

# PostgreSQL's server binaries: on PATH, or where Debian keeps them.
have_postgres() {
  command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1 && return 0
  compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null
}

packages=()
command -v redis-server >/dev/null 2>&1 || packages+=(redis-server)
have_postgres || packages+=(postgresql)
command -v make >/dev/null 2>&1 || packages+=(make)
command -v cc >/dev/null 2>&1 || packages+=(gcc)
command -v c++ >/dev/null 2>&1 || packages+=(g++)
command -v pkg-config >/dev/null 2>&1 || packages+=(pkg-config)
command -v curl >/dev/null 2>&1 || packages+=(curl)
dpkg -s libssl-dev >/dev/null 2>&1 || packages+=(libssl-dev)
# The tests also drive the viewer page in Debian's Chromium through playwright-core.
if [ "${1:-}" = "--test" ]; then
  command -v chromium >/dev/null 2>&1 || packages+=(chromium)
  command -v node >/dev/null 2>&1 || packages+=(nodejs)
  command -v npm >/dev/null 2>&1 || packages+=(npm)
fi

updated=""
apt_update() {
  if [ -z "$updated" ]; then
    $SUDO apt-get update -qq
    updated=1
  fi
}

if [ "${#packages[@]}" -gt 0 ]; then
  echo "setup: installing ${packages[*]}"
  if [[ " ${packages[*]} " == *" postgresql "* ]]; then
    # The packages would create and start a cluster on 5432; crm-events runs its
    # own throwaway clusters instead.
    $SUDO mkdir -p /etc/postgresql-common/createcluster.d
    echo "create_main_cluster = false" |
      $SUDO tee /etc/postgresql-common/createcluster.d/crm-events.conf >/dev/null
  fi
  apt_update
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${packages[@]}"
fi

# promtool, without the Prometheus server the package would install and start.
if [ ! -x "$TOOLS/promtool" ]; then
  if command -v promtool >/dev/null 2>&1; then
    mkdir -p "$TOOLS" && ln -sf "$(command -v promtool)" "$TOOLS/promtool"
  else
    echo "setup: unpacking promtool into $TOOLS"
    apt_update
    work=$(mktemp -d)
    (cd "$work" && apt-get download -qq prometheus)
    dpkg-deb -x "$work"/prometheus_*.deb "$work/x"
    mkdir -p "$TOOLS" && cp "$work/x/usr/bin/promtool" "$TOOLS/promtool"
    rm -rf "$work"
  fi
fi

# npm ci when a package's lock names something node_modules lacks (a fresh clone,
# or a lock that gained a package since).
npm_ci_if_stale() {
  local dir=$1 stamp=$1/node_modules/.package-lock.json
  if [ ! -f "$stamp" ] || [ "$dir/package-lock.json" -nt "$stamp" ]; then
    echo "setup: installing the npm packages of $dir"
    npm ci --prefix "$dir" --no-audit --no-fund
  fi
}
if [ "${1:-}" = "--test" ]; then
  npm_ci_if_stale tests/browser
  npm_ci_if_stale clients/typescript
fi

# playwright-core needs Node.js 20 or newer; Debian 12's nodejs is 18. An older one
# gets Node 20 from the npm registry (the `node` package) beside playwright-core.
node_major=$(node --version 2>/dev/null | sed -n 's/^v\([0-9]*\).*/\1/p')
if [ "${1:-}" = "--test" ] && [ "${node_major:-0}" -lt 20 ] && [ ! -x tests/browser/node_modules/.bin/node ]; then
  echo "setup: Node.js $(node --version 2>/dev/null) is older than 20: installing node@20 into tests/browser"
  npm install --prefix tests/browser --no-save --no-audit --no-fund node@20
fi

if [ "${1:-}" = "--lint" ] && ! cargo machete --version >/dev/null 2>&1; then
  echo "setup: installing cargo-machete"
  cargo install --locked --version 0.9.2 cargo-machete
fi

if [ "${1:-}" = "--docs" ] && ! mdbook --version 2>/dev/null | grep -qx "mdbook v0.5.4"; then
  echo "setup: installing mdbook"
  cargo install --locked --version 0.5.4 --no-default-features mdbook
fi
if [ "${1:-}" = "--docs" ] && ! command -v linkchecker >/dev/null 2>&1; then
  echo "setup: installing linkchecker"
  apt_update
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends linkchecker
fi

if [ "${1:-}" = "--fuzz" ] && ! cargo fuzz --version >/dev/null 2>&1; then
  echo "setup: installing cargo-fuzz"
  cargo install --locked --version 0.13.2 cargo-fuzz
fi

# The benchmarks' reference: Debian's nginx and Nchan module, unpacked into
# target/tools/nginx (installing the packages would start nginx on :80). Nchan
# creates nginx's compiled-in body directory, /var/lib/nginx/body, at start.
if [ "${1:-}" = "--bench" ] && [ ! -x target/tools/nginx/usr/sbin/nginx ]; then
  echo "setup: unpacking nginx and libnginx-mod-nchan into target/tools/nginx"
  apt_update
  work=$(mktemp -d)
  (cd "$work" && apt-get download -qq nginx libnginx-mod-nchan)
  for deb in "$work"/*.deb; do dpkg-deb -x "$deb" target/tools/nginx; done
  rm -rf "$work"
fi
if [ "${1:-}" = "--bench" ] && [ ! -d /var/lib/nginx ]; then
  $SUDO mkdir -p /var/lib/nginx
fi

if ! rustup target list --installed | grep -qx wasm32-wasip2; then
  echo "setup: adding the wasm32-wasip2 target"
  rustup target add wasm32-wasip2
fi
