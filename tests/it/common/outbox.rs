//! The outbox side of the chain: a migrated Postgres, rows written as the CRM writes
//! them, and reading the outbox back.

use crm_events_harness::postgres::Postgres;
use std::time::Duration;

/// A fresh cluster with the migrations applied.
pub async fn migrated_postgres() -> Postgres {
    let pg = Postgres::start().expect("a throwaway PostgreSQL cluster");
    let mut client = pg.client().await.unwrap();
    crm_events_outbox::migrate::apply(&mut client)
        .await
        .expect("migrations");
    pg
}

/// Inserts rows `(tenant, type, payload JSON)` in one transaction, as the CRM's code
/// does beside its business change; returns their ids.
pub async fn insert(
    client: &mut tokio_postgres::Client,
    rows: &[(&str, &str, String)],
) -> Vec<i64> {
    let tx = client.transaction().await.unwrap();
    let mut ids = Vec::with_capacity(rows.len());
    for (tenant, kind, payload) in rows {
        let row = tx
            .query_one(
                "INSERT INTO outbox_events (tenant_id, type, payload, occurred_at)
                 VALUES ($1::text::uuid, $2, $3::text::jsonb, now()) RETURNING id",
                &[tenant, kind, payload],
            )
            .await
            .unwrap();
        ids.push(row.get(0));
    }
    tx.commit().await.unwrap();
    ids
}

/// How many rows are published.
pub async fn published(client: &tokio_postgres::Client) -> i64 {
    client
        .query_one(
            "SELECT count(*) FROM outbox_events WHERE published_at IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// Waits until `check` holds for the count of published rows; returns it.
pub async fn wait_published(
    client: &tokio_postgres::Client,
    timeout: Duration,
    check: impl Fn(i64) -> bool,
) -> i64 {
    let seen = std::cell::Cell::new(0);
    let what = "the published rows to reach the expected count";
    crm_events_harness::wait::until(what, timeout, || async {
        seen.set(published(client).await);
        check(seen.get())
    })
    .await
    .unwrap_or_else(|e| panic!("{e} (stuck at {})", seen.get()));
    seen.get()
}

/// A tenant id of the tests (UUIDs, as the outbox requires).
pub fn tenant(i: usize) -> String {
    format!("00000000-0000-4000-8000-{i:012}")
}
