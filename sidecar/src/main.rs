//! `crm-events-sidecar`: relay the CRM's Kafka topic into Redis for crm-events.
//!
//! * `crm-events-sidecar` (or `… run`) relays until SIGTERM/SIGINT; with
//!   `--embedded-kafka` it first starts an in-memory Kafka-protocol broker with the
//!   topic and a demo producer (what `make run` does when no Kafka is given).
//! * `crm-events-sidecar produce '{"Type":"JobCreated",…}'` publishes one event
//!   (the argument, or standard input).
//! * `crm-events-sidecar keygen --out DIR` and `crm-events-sidecar token --key
//!   DIR/private.pem --tenant …` make a key pair and mint test tokens.
//!
//! Every flag has an environment variable; `--help` lists them.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use crm_events_sidecar::config::{KafkaArgs, RunArgs};
use crm_events_sidecar::demo;
use crm_events_sidecar::telemetry::Telemetry;
use crm_events_sidecar::token;
use jsonwebtoken::Algorithm;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Relay the CRM's Kafka domain events into Redis for crm-events."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Relay Kafka to Redis (the default).
    Run(RunArgs),
    /// Publish one event to a topic (for docs and troubleshooting).
    Produce(ProduceArgs),
    /// Write a key pair (private.pem, public.pem) for signing test tokens.
    Keygen(KeygenArgs),
    /// Mint a JWT the app accepts, from a private key file (testing and demos).
    Token(TokenArgs),
}

#[derive(clap::Args, Debug)]
struct KeygenArgs {
    /// EdDSA (Ed25519), ES256 (P-256) or RS256 (RSA 2048).
    #[arg(long, default_value = "EdDSA", value_parser = token::parse_algorithm)]
    alg: Algorithm,
    /// Directory to write private.pem and public.pem into (created if missing).
    #[arg(long)]
    out: PathBuf,
}

#[derive(clap::Args, Debug)]
struct TokenArgs {
    /// The private key (PKCS#8 PEM), or the shared secret's file for HS256.
    #[arg(long)]
    key: PathBuf,
    /// Signing algorithm.
    #[arg(long, default_value = "EdDSA", value_parser = token::parse_algorithm)]
    alg: Algorithm,
    /// `sub`: who the subscriber is, one per person or system (the per-subject
    /// stream limit counts by it, so tokens that share a `sub` share that limit).
    #[arg(long, value_parser = parse_subject)]
    sub: String,
    /// A tenant it may see (repeatable); `*` for every tenant.
    #[arg(long = "tenant", required = true)]
    tenants: Vec<String>,
    /// An event type it may see (repeatable; default: every type).
    #[arg(long = "type")]
    types: Vec<String>,
    /// A permission (repeatable): `publish` lets it POST events for its tenants.
    #[arg(long = "permission")]
    permissions: Vec<String>,
    /// Lifetime: 90s, 15m, 1h, 2d.
    #[arg(long, default_value = "1h", value_parser = token::parse_ttl)]
    ttl: u64,
    /// `kid` header (selects the key in a JWK set).
    #[arg(long)]
    kid: Option<String>,
    /// `iss` claim.
    #[arg(long)]
    iss: Option<String>,
    /// `aud` claim.
    #[arg(long)]
    aud: Option<String>,
}

#[derive(clap::Args, Debug)]
struct ProduceArgs {
    #[command(flatten)]
    kafka: KafkaArgs,
    /// Record key (default: the event's "Type").
    #[arg(long)]
    key: Option<String>,
    /// Partition (default: by key).
    #[arg(long)]
    partition: Option<i32>,
    /// Send the value as given, without checking that it is JSON.
    #[arg(long)]
    raw: bool,
    /// The event JSON; read from standard input when absent.
    value: Option<String>,
}

#[tokio::main]
async fn main() -> Result<()> {
    crm_events_native::logging::init();
    let cli = Cli::parse();
    match cli.command {
        None => run(cli.run).await,
        Some(Command::Run(args)) => run(args).await,
        Some(Command::Produce(args)) => produce(args).await,
        Some(Command::Keygen(args)) => keygen(args),
        Some(Command::Token(args)) => mint(args),
    }
}

async fn run(mut args: RunArgs) -> Result<()> {
    let telemetry = Arc::new(Telemetry::new());
    let listener = crm_events_native::ops::bind(&args.http_listen, "HTTP_LISTEN").await?;
    tracing::info!(listen = %listener.local_addr()?, "sidecar HTTP (healthz, readyz, metrics)");
    tokio::spawn(crm_events_native::ops::serve(listener, telemetry.clone()));

    // The embedded broker must outlive the relay.
    let _embedded = if args.embedded_kafka {
        Some(start_embedded(&mut args)?)
    } else {
        None
    };

    let result = crm_events_sidecar::relay::run(
        args.relay,
        telemetry,
        crm_events_native::signals::shutdown(),
    )
    .await;
    if let Err(e) = &result {
        tracing::error!(error = format!("{e:#}"), "sidecar stopped with an error");
    }
    result
}

/// Starts the in-memory broker (and the demo producer) and points the relay at it.
fn start_embedded(args: &mut RunArgs) -> Result<demo::EmbeddedKafka> {
    let kafka = demo::EmbeddedKafka::start(&args.relay.kafka.topic, 3)?;
    args.relay.kafka.brokers = kafka.brokers();
    // The embedded broker holds a waiting fetch to its end even when data arrives.
    args.relay
        .kafka
        .properties
        .insert(0, ("fetch.wait.max.ms".to_string(), "5".to_string()));
    tracing::info!(brokers = %kafka.brokers(), topic = %args.relay.kafka.topic, "embedded Kafka broker started");
    if let Some(path) = &args.embedded_kafka_file {
        // Written whole under another name, then renamed: a reader never sees half.
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, kafka.brokers())
            .and_then(|()| std::fs::rename(&tmp, path))
            .with_context(|| format!("writing EMBEDDED_KAFKA_FILE {}", path.display()))?;
    }
    if args.demo_rate > 0 {
        let producer = demo::producer(&kafka.brokers(), &[])?;
        tokio::spawn(demo::run_demo_producer(
            producer,
            args.relay.kafka.topic.clone(),
            args.demo_rate,
        ));
        tracing::info!(rate = args.demo_rate, "demo producer started");
    }
    Ok(kafka)
}

async fn produce(args: ProduceArgs) -> Result<()> {
    let value = match args.value {
        Some(v) => v,
        None => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("reading the event from stdin")?;
            s
        }
    };
    let key = match (&args.key, args.raw) {
        (Some(k), _) => Some(k.clone()),
        (None, true) => None,
        (None, false) => {
            let v: serde_json::Value = serde_json::from_str(&value)
                .context("the event is not JSON (use --raw to send it anyway)")?;
            v.get("Type").and_then(|t| t.as_str()).map(str::to_string)
        }
    };
    let producer = demo::producer(&args.kafka.brokers, &args.kafka.properties)?;
    let (partition, offset) = demo::produce_one(
        &producer,
        &args.kafka.topic,
        key.as_deref(),
        args.partition,
        value.trim_end_matches(['\n', '\r']).as_bytes(),
    )
    .await?;
    println!(
        "{{\"topic\":\"{}\",\"partition\":{partition},\"offset\":{offset}}}",
        args.kafka.topic
    );
    Ok(())
}

fn keygen(args: KeygenArgs) -> Result<()> {
    let pair = token::generate(args.alg)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let private = args.out.join("private.pem");
    write_private(&private, &pair.private_pem)?;
    std::fs::write(args.out.join("public.pem"), &pair.public_pem)?;
    println!("{}", args.out.join("public.pem").display());
    Ok(())
}

/// Writes a private key readable by its owner only.
fn write_private(path: &std::path::Path, pem: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(pem.as_bytes())?;
    Ok(())
}

/// A `sub` as the app accepts it: 1-255 bytes.
fn parse_subject(s: &str) -> Result<String, String> {
    let max = crm_events_contracts::auth::MAX_SUBJECT_BYTES;
    if s.is_empty() || s.len() > max {
        return Err(format!("the subject must be 1-{max} bytes"));
    }
    Ok(s.to_string())
}

fn mint(args: TokenArgs) -> Result<()> {
    let key =
        std::fs::read(&args.key).with_context(|| format!("reading {}", args.key.display()))?;
    let claims = token::Claims {
        subject: args.sub,
        tenants: args.tenants,
        types: args.types,
        permissions: args.permissions,
        ttl_seconds: args.ttl,
        issuer: args.iss,
        audience: args.aud,
    };
    let jwt = token::sign(
        args.alg,
        &key,
        args.kid.as_deref(),
        &claims.to_json(token::now()),
    )?;
    // The token alone on stdout (scripts capture it); who it is for on stderr.
    eprintln!(
        "token for sub={:?}, expires in {} s",
        claims.subject, claims.ttl_seconds
    );
    println!("{jwt}");
    Ok(())
}
