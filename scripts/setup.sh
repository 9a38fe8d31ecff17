#!/usr/bin/env bash
# Installs what a fresh Debian machine with Rust lacks to build, test and run crm-events:
# redis-server, the C toolchain pieces librdkafka needs, promtool, and the wasm32-wasip2
# target; with --test also Chromium, Node.js and playwright-core for the browser test;
# with --lint also cargo-machete (unused dependencies).
# Safe to run again: it installs only what is missing.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi

packages=()
command -v redis-server >/dev/null 2>&1 || packages+=(redis-server)
command -v promtool >/dev/null 2>&1 || packages+=(prometheus)
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

if [ "${#packages[@]}" -gt 0 ]; then
  echo "setup: installing ${packages[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${packages[@]}"
fi

if [ "${1:-}" = "--test" ] && [ ! -d tests/browser/node_modules/playwright-core ]; then
  echo "setup: installing playwright-core (tests/browser)"
  npm ci --prefix tests/browser --no-audit --no-fund
fi

if [ "${1:-}" = "--lint" ] && ! cargo machete --version >/dev/null 2>&1; then
  echo "setup: installing cargo-machete"
  cargo install --locked --version 0.9.2 cargo-machete
fi

if ! rustup target list --installed | grep -qx wasm32-wasip2; then
  echo "setup: adding the wasm32-wasip2 target"
  rustup target add wasm32-wasip2
fi
