//! The API documents and the TypeScript client against the whole running thing: a
//! real Redis, the Kafka mock cluster, the sidecar, PostgreSQL with the outbox
//! publisher, and the app on the host (every process its own, so each can be killed).
//!
//! - `docs/src/api/openapi.json` names every route `spin.toml` triggers;
//! - both documents pass their validators, and the app's real answers and SSE frames
//!   match them (`tests/browser/api.mjs`);
//! - the client's committed build is what its sources and the schemas give;
//! - the client, in Node and in Chromium, streams exactly once across a kill of the
//!   app and the sidecar and a token expiry, and publishes idempotently
//!   (`tests/browser/client.mjs`).

mod common;

use common::node::{browser_dir, converse, node_binary};
use common::outbox::{migrated_postgres, tenant};
use common::sidecar::{Native, Sidecar};
use common::Killed;
use crm_events_harness::mock_kafka::Kafka;
use crm_events_harness::postgres::Postgres;
use crm_events_harness::redis_server::{free_port, RedisServer};
use crm_events_harness::tokens::{auth_vars, claims, sign};
use jsonwebtoken::Algorithm;
use serde_json::{json, Value};
use std::process::Command;

const TOPIC: &str = "aetherlink.events";

/// Everything, each part a process of its own.
struct Rig {
    redis: RedisServer,
    kafka: Kafka,
    pg: Postgres,
    _publisher: Native,
    sidecar: Sidecar,
    sidecar_env: Vec<(&'static str, &'static str)>,
    app: Killed,
    port: u16,
    tenant: String,
}

impl Rig {
    /// Starts it all; `sidecar_env` tunes the sidecar (retention, say).
    fn start(sidecar_env: &[(&'static str, &'static str)]) -> Rig {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let pg = runtime.block_on(migrated_postgres());
        let redis = RedisServer::start().unwrap();
        let kafka = Kafka::start(TOPIC, 3);
        let publisher = common::publisher::start(&pg.url(), &kafka.brokers(), TOPIC, &[]);
        let mut sidecar_env = sidecar_env.to_vec();
        sidecar_env.push(("BATCH_LINGER_MS", "1"));
        let sidecar = Sidecar::start(&redis.url(), &kafka.brokers(), TOPIC, &sidecar_env);
        let port = free_port().unwrap();
        let app = start_app(port, &redis, &pg);
        Rig {
            app,
            redis,
            kafka,
            pg,
            _publisher: publisher,
            sidecar,
            sidecar_env,
            port,
            tenant: tenant(1),
        }
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A token of `kind` (operator, tenant, publisher) valid for `ttl` seconds.
    fn token(&self, kind: &str, ttl: i64) -> String {
        let mut c = match kind {
            "operator" => claims("ops", &["*"], ttl),
            _ => claims("user", &[self.tenant.as_str()], ttl),
        };
        if kind == "publisher" {
            c["permissions"] = json!(["publish"]);
        }
        sign(Algorithm::EdDSA, None, &c)
    }

    /// Events `from..=to` of the tenant to Kafka, each after one of another tenant.
    fn produce(&self, from: u64, to: u64) {
        for seq in from..=to {
            for (who, partition) in [(tenant(2), 1), (self.tenant.clone(), 0)] {
                let value = json!({"Type": "JobUpdated", "TenantId": who, "JobId": format!("job-{seq}"), "Seq": seq});
                self.kafka.send(
                    partition,
                    Some(who.as_bytes()),
                    Some(value.to_string().as_bytes()),
                );
            }
        }
        self.kafka.flush();
    }

    /// Kills the app and the sidecar, produces `from..=to` while they are down, and
    /// starts them again.
    fn kill_produce_restart(&mut self, from: u64, to: u64) {
        self.app.kill();
        self.sidecar.kill();
        self.produce(from, to);
        self.sidecar = Sidecar::start(
            &self.redis.url(),
            &self.kafka.brokers(),
            TOPIC,
            &self.sidecar_env,
        );
        self.app = start_app(self.port, &self.redis, &self.pg);
    }

    /// Answers a script's step: tokens, events, kills.
    fn answer(&mut self, step: &str) -> Option<String> {
        let words: Vec<&str> = step.split(' ').collect();
        let number = |i: usize| words[i].parse::<u64>().unwrap();
        match words[0] {
            "TOKEN" => Some(self.token(words[1], number(2) as i64)),
            "PRODUCE" => {
                self.produce(number(1), number(2));
                Some("produced".into())
            }
            "KILL" => {
                self.kill_produce_restart(number(1), number(2));
                Some("restarted".into())
            }
            _ => None,
        }
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![("BASE_URL", self.base()), ("TENANT", self.tenant.clone())]
    }
}

/// The app on the host, with access control on (no clock leeway, so tokens expire
/// on time), publishing into `pg`, and quick reconnects.
fn start_app(port: u16, redis: &RedisServer, pg: &Postgres) -> Killed {
    let mut vars = auth_vars(&[Algorithm::EdDSA]);
    vars.push(("postgres_host", pg.host_port()));
    vars.push(("postgres_sslmode", "disable".into()));
    vars.push(("auth_leeway_seconds", "0".into()));
    vars.push(("retry_ms", "200".into()));
    common::spawn_app(port, redis, &vars)
}

/// Every route `spin.toml` triggers is a path of the OpenAPI document (the catch-all
/// `/...` is documented as `/`), and every documented path is a route.
#[test]
fn openapi_documents_every_route_of_spin_toml() {
    let mut routes: Vec<String> = common::manifest_routes()
        .into_iter()
        .map(|(route, _)| route.replace("/...", "/"))
        .collect();
    let doc: Value = serde_json::from_str(
        &std::fs::read_to_string(common::root().join("docs/src/api/openapi.json")).unwrap(),
    )
    .unwrap();
    let mut paths: Vec<String> = doc["paths"].as_object().unwrap().keys().cloned().collect();
    routes.sort();
    paths.sort();
    assert_eq!(
        paths, routes,
        "docs/src/api/openapi.json paths vs spin.toml routes"
    );
}

/// The documents validate, and the app's answers and frames are what they say.
#[test]
fn api_documents_validate_and_match_the_running_app() {
    // Tenant streams keep 5 entries, so a resume into trimmed history gives a gap.
    let mut rig = Rig::start(&[("TENANT_STREAM_MAXLEN", "5"), ("STREAM_MAXLEN", "5")]);
    let env = rig.env();
    converse("api.mjs", &env, |step| rig.answer(step));
}

/// The client in Node: a bearer header from a refresh function.
#[test]
fn client_in_node_streams_exactly_once_across_kills_and_expiry() {
    client_scenario("node");
}

/// The client in Chromium, as the app serves it: signed in with the session cookie.
#[test]
fn client_in_chromium_streams_exactly_once_across_kills_and_expiry() {
    client_scenario("browser");
}

/// `tests/browser/client.mjs` in `mode` against a rig of its own.
fn client_scenario(mode: &str) {
    let mut rig = Rig::start(&[]);
    let mut env = rig.env();
    env.push(("MODE", mode.into()));
    converse("client.mjs", &env, |step| rig.answer(step));
}

/// The committed client is what its sources give (`src/events.ts` is generated from
/// the AsyncAPI schemas, `dist/` is the TypeScript compiler's output of `src/`), the
/// examples in the READMEs and docs type-check, and its unit tests pass.
#[test]
fn the_client_build_is_current_and_its_unit_tests_pass() {
    npm_in_client(&["run", "--silent", "check"]);
    npm_in_client(&["test"]);
}

/// Runs npm in `clients/typescript` with the Node.js the other tests use.
fn npm_in_client(args: &[&str]) {
    let package = common::root().join("clients/typescript");
    assert!(
        package.join("node_modules/typescript").exists(),
        "the client's dev dependencies are not installed: npm ci --prefix clients/typescript (make test does)"
    );
    let node = node_binary(&browser_dir());
    let dirs = node
        .parent()
        .filter(|d| d.is_absolute())
        .map(|d| d.to_path_buf());
    let path = std::env::join_paths(dirs.into_iter().chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .unwrap();
    let out = Command::new("npm")
        .args(args)
        .current_dir(&package)
        .env("PATH", path)
        .output()
        .expect("npm");
    assert!(
        out.status.success(),
        "npm {} in clients/typescript failed:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
