//! `crm-events-outbox`: publish the CRM's Postgres outbox to Kafka.
//!
//! * `crm-events-outbox` (or `… run`): publish until SIGTERM/SIGINT (several may run:
//!   one leads, the others stand by).
//! * `… migrate`: apply the SQL migrations and exit.
//! * `… status`: the backlog as JSON.
//! * `… failed list` / `… failed requeue`: the rows that ended failed, and putting
//!   them back to be published.
//! * `… retention`: one retention pass (the publisher runs them itself).
//! * `… demo --rate N`: write demo CRM events into the outbox (`make run`).
//!
//! Every flag has an environment variable; `--help` lists them.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use crm_events_native::{logging, ops, signals};
use crm_events_outbox::config::{DatabaseArgs, PublisherConfig, RunArgs};
use crm_events_outbox::db::{self, Session};
use crm_events_outbox::telemetry::Telemetry;
use crm_events_outbox::{demo, migrate, service, store};
use std::sync::Arc;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Publish the CRM's Postgres outbox to Kafka for crm-events."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Publish (the default).
    Run(RunArgs),
    /// Apply the SQL migrations and exit.
    Migrate(DatabaseArgs),
    /// Print the backlog (pending, oldest pending age, failed) as JSON.
    Status(DatabaseArgs),
    /// The rows that ended failed.
    #[command(subcommand)]
    Failed(FailedCommand),
    /// Run one retention pass (published rows older than the retention, expired keys).
    Retention(Box<PublisherConfig>),
    /// Write demo CRM events into the outbox (a stand-in for the CRM).
    Demo(DemoArgs),
}

#[derive(Subcommand, Debug)]
enum FailedCommand {
    /// List failed rows as JSON lines, oldest first.
    List {
        #[command(flatten)]
        db: DatabaseArgs,
        /// Only this tenant's.
        #[arg(long)]
        tenant: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Put failed rows back to be published (their attempts start again at 0).
    Requeue {
        #[command(flatten)]
        db: DatabaseArgs,
        /// These rows (repeatable).
        #[arg(long = "id")]
        ids: Vec<i64>,
        /// Every failed row (of --tenant, when given).
        #[arg(long)]
        all: bool,
        /// Only this tenant's.
        #[arg(long)]
        tenant: Option<String>,
    },
}

#[derive(clap::Args, Debug)]
struct DemoArgs {
    #[command(flatten)]
    db: DatabaseArgs,
    /// Events per second.
    #[arg(long, env = "DEMO_RATE", default_value_t = 5)]
    rate: u32,
}

#[tokio::main]
async fn main() -> Result<()> {
    logging::init();
    let cli = Cli::parse();
    let result = match cli.command {
        None => run(cli.run).await,
        Some(Command::Run(args)) => run(args).await,
        Some(Command::Migrate(db)) => migrate_now(&db).await,
        Some(Command::Status(db)) => status(&db).await,
        Some(Command::Failed(cmd)) => failed(cmd).await,
        Some(Command::Retention(config)) => retention(&config).await,
        Some(Command::Demo(args)) => demo::run(&args.db, args.rate, signals::shutdown()).await,
    };
    if let Err(e) = &result {
        tracing::error!(
            error = format!("{e:#}"),
            "crm-events-outbox stopped with an error"
        );
    }
    result
}

async fn run(args: RunArgs) -> Result<()> {
    let telemetry = Arc::new(Telemetry::new());
    let listener = ops::bind(&args.http_listen, "HTTP_LISTEN").await?;
    tracing::info!(listen = %listener.local_addr()?, "publisher HTTP (healthz, readyz, metrics)");
    tokio::spawn(ops::serve(listener, telemetry.clone()));
    service::run(args.publisher, telemetry, signals::shutdown()).await
}

/// One connection for a command (no retrying: a command says at once what is wrong).
async fn session(db: &DatabaseArgs) -> Result<Session> {
    let config = db::config(&db.database_url, "crm-events-outbox-cli")?;
    Session::connect(&config).await.with_context(|| {
        format!(
            "connecting to {}",
            crm_events_native::logging::redact_url(&db.database_url)
        )
    })
}

async fn migrate_now(db: &DatabaseArgs) -> Result<()> {
    let mut s = session(db).await?;
    let applied = migrate::apply(&mut s.client).await?;
    println!(
        "{}",
        serde_json::json!({ "applied": applied, "latest": migrate::ALL.last().map(|m| m.version) })
    );
    Ok(())
}

async fn status(db: &DatabaseArgs) -> Result<()> {
    let s = session(db).await?;
    let b = store::backlog(&s.client).await?;
    println!(
        "{}",
        serde_json::json!({ "pending": b.pending, "oldest_pending_age_seconds": b.oldest_age_seconds, "failed": b.failed })
    );
    Ok(())
}

async fn failed(cmd: FailedCommand) -> Result<()> {
    match cmd {
        FailedCommand::List { db, tenant, limit } => {
            let s = session(&db).await?;
            for row in store::failed_rows(&s.client, tenant.as_deref(), limit).await? {
                println!("{row}");
            }
        }
        FailedCommand::Requeue {
            db,
            ids,
            all,
            tenant,
        } => {
            if ids.is_empty() && !all {
                bail!("name the rows: --id N (repeatable), or --all");
            }
            let mut s = session(&db).await?;
            let ids = (!ids.is_empty()).then_some(ids.as_slice());
            let n = store::requeue(&mut s.client, ids, tenant.as_deref()).await?;
            println!("{}", serde_json::json!({ "requeued": n }));
        }
    }
    Ok(())
}

async fn retention(config: &PublisherConfig) -> Result<()> {
    let s = session(&config.database).await?;
    let (rows, keys) = service::retention_pass(&s.client, config, &Telemetry::new()).await?;
    println!(
        "{}",
        serde_json::json!({ "outbox_events": rows, "idempotency_keys": keys })
    );
    Ok(())
}
