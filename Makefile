# crm-events: `make run` runs the whole thing, `make test` runs every test.
CARGO ?= cargo
# The components, as spin.toml's build commands name them (one list, in spin.toml).
COMPONENTS := $(shell sed -n 's/^command = "cargo build .*-p \(crm-events-[a-z-]*\)"$$/\1/p' spin.toml)
WASM_FLAGS := --release --target wasm32-wasip2 $(addprefix -p ,$(COMPONENTS))

.PHONY: all setup components build test lint fmt run bench soak stress-stop fuzz clean docs config-docs

all: build

setup: ## Install what a fresh Debian machine lacks (apt packages, wasm target).
	./scripts/setup.sh

components: setup ## The Spin components (.wasm), as spin.toml names them.
	$(CARGO) build $(WASM_FLAGS)

build: setup components ## Components, the sidecar and the test host.
	$(CARGO) build --bins

test: build ## Every test: unit, integration (real Redis, Kafka mock cluster, real .wasm, Chromium).
	./scripts/setup.sh --test
	$(CARGO) fmt --all -- --check
	@rm -f target/skipped-checks.txt
	$(CARGO) test --no-fail-fast
	@if [ -s target/skipped-checks.txt ]; then echo "checks skipped:"; cat target/skipped-checks.txt; fi

lint: ## rustfmt, clippy (native crates and components) and unused dependencies.
	./scripts/setup.sh --lint
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) clippy $(WASM_FLAGS) -- -D warnings
	$(CARGO) machete

fmt:
	$(CARGO) fmt --all

docs: ## The book (docs/src, mdbook) into target/book; every link and anchor checked.
	./scripts/setup.sh --docs
	mdbook build docs
	linkchecker -f docs/linkcheckerrc --no-status target/book/index.html
	./scripts/check-readme-links.sh

config-docs: ## Rewrite docs/src/configuration.md from spin.toml and the native processes' flags.
	$(CARGO) run -q -p crm-events-docgen

# The native parts `make run` starts, built with optimisations (a debug build cannot
# carry 1,000 events/s to 100 clients).
RUN_PACKAGES := -p crm-events-sidecar -p crm-events-outbox -p crm-events-host

run: setup components ## Redis, the sidecar (embedded Kafka unless KAFKA_BROKERS is set) and the app, release builds.
	$(CARGO) build --release $(RUN_PACKAGES)
	BIN=target/release ./scripts/run.sh

clean:
	$(CARGO) clean

bench: components ## Relay throughput, SSE latency/fan-out, auth cost, outbox (release build; see docs/benchmarks.md).
	$(CARGO) build --release -p crm-events-sidecar -p crm-events-outbox -p crm-events-host -p crm-events-bench
	./target/release/crm-events-bench relay
	./target/release/crm-events-bench sse
	./target/release/crm-events-bench auth
	./target/release/crm-events-bench outbox
	./scripts/setup.sh --bench
	./target/release/crm-events-bench reference

FUZZ_SECONDS ?= 60
fuzz: ## Each fuzz target (stream query, token claims, publish body, SSE framing) for FUZZ_SECONDS (see docs/benchmarks.md).
	./scripts/setup.sh --fuzz
	./scripts/fuzz.sh $(FUZZ_SECONDS)

stress-stop: build ## make run's stop, 20 times under stress-ng on every core (RUNS=20).
	./scripts/stress-stop.sh

soak: components ## An hour at 200 events/s, 500 reconnecting clients: memory graph, completeness (docs/benchmarks.md).
	$(CARGO) build --release -p crm-events-sidecar -p crm-events-host -p crm-events-bench
	./target/release/crm-events-bench soak $(SOAK_ARGS)
