//! `crm-events-outbox demo`: a stand-in for the CRM, so `make run` shows the whole
//! chain. It writes the demo's events into the outbox at a rate, each tick one
//! transaction, as the CRM writes its events beside its business changes.

use crate::config::DatabaseArgs;
use crate::db::{self, Session};
use anyhow::Result;
use crm_events_contracts::demo;
use crm_events_native::pace::{due_by, Pace};
use std::future::Future;

/// The insert of one tick's rows.
const INSERT: &str = "INSERT INTO outbox_events (tenant_id, type, payload, occurred_at)
     SELECT t::uuid, e, p::jsonb, clock_timestamp()
       FROM unnest($1::text[], $2::text[], $3::text[]) AS u(t, e, p)";

/// The most rows one insert carries (a Postgres that was away for a while is caught
/// up in statements of this size).
const MAX_BATCH: u64 = 5_000;

/// Writes demo rows at `rate` per second until `shutdown`, holding the rate
/// whatever one commit costs (up to what Postgres can take).
pub async fn run(db: &DatabaseArgs, rate: u32, shutdown: impl Future<Output = ()>) -> Result<()> {
    tokio::pin!(shutdown);
    let pg = db::config(&db.database_url, "crm-events-outbox-demo")?;
    let on_error = |e: &anyhow::Error| {
        tracing::warn!(error = format!("{e:#}"), "demo: cannot reach Postgres yet")
    };
    let Some(mut session) = Session::connect_retrying(&pg, on_error, shutdown.as_mut()).await
    else {
        return Ok(());
    };
    let pace = Pace::new(rate);
    let mut tick = tokio::time::interval(pace.every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let started = tokio::time::Instant::now();
    let mut n = 0u64;
    tracing::info!(rate, "demo: writing CRM events into the outbox");
    loop {
        tokio::select! {
            _ = shutdown.as_mut() => return Ok(()),
            _ = tick.tick() => {}
        }
        // Everything due by now in one statement: a slow commit makes the next
        // batch larger instead of the rate lower.
        let due = due_by(started.elapsed(), rate);
        let batch = due.saturating_sub(n).min(MAX_BATCH);
        if batch == 0 {
            continue;
        }
        let events: Vec<demo::DemoEvent> = (n..n + batch).map(demo::event).collect();
        let tenants: Vec<&str> = events.iter().map(|e| e.tenant_id).collect();
        let types: Vec<&str> = events.iter().map(|e| e.event_type).collect();
        let payloads: Vec<&str> = events.iter().map(|e| e.payload.as_str()).collect();
        match session
            .client
            .execute(INSERT, &[&tenants, &types, &payloads])
            .await
        {
            Ok(_) => n += batch,
            Err(e) => {
                tracing::warn!(error = %e, "demo: insert failed; reconnecting");
                let on_error = |e: &anyhow::Error| {
                    tracing::warn!(error = format!("{e:#}"), "demo: cannot reach Postgres")
                };
                match Session::connect_retrying(&pg, on_error, shutdown.as_mut()).await {
                    Some(s) => session = s,
                    None => return Ok(()),
                }
            }
        }
    }
}
