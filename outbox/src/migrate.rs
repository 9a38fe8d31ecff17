//! Versioned SQL migrations the publisher applies itself (`crm-events-outbox migrate`,
//! and at `run` start unless `--migrate=false`).
//!
//! The files in `outbox/migrations/` are compiled in. Each is applied once, in
//! version order, inside one transaction that holds an advisory lock, so several
//! publishers starting together apply them once. A table records what was applied
//! with a checksum: a migration edited after it ran is an error, not a silent skip.

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use tokio_postgres::Client;

/// One migration.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Its version (the file's number).
    pub version: i32,
    /// Its name (the rest of the file name).
    pub name: &'static str,
    /// The SQL.
    pub sql: &'static str,
}

/// Every migration, in order.
pub const ALL: &[Migration] = &[
    Migration {
        version: 1,
        name: "outbox_tables",
        sql: include_str!("../migrations/0001_outbox_tables.sql"),
    },
    Migration {
        version: 2,
        name: "publisher",
        sql: include_str!("../migrations/0002_publisher.sql"),
    },
];

/// The table that records applied migrations.
pub const HISTORY_TABLE: &str = "crm_events_schema_migrations";

impl Migration {
    /// SHA-256 (hex) of the SQL.
    pub fn checksum(&self) -> String {
        Sha256::digest(self.sql.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// Applies what is not applied yet; returns the versions it applied.
pub async fn apply(client: &mut Client) -> Result<Vec<i32>> {
    let tx = client
        .transaction()
        .await
        .context("starting the migration")?;
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('crm-events/migrations', 0))",
        &[],
    )
    .await?;
    tx.batch_execute(&format!(
        "CREATE TABLE IF NOT EXISTS {HISTORY_TABLE} (
             version INTEGER PRIMARY KEY,
             name TEXT NOT NULL,
             checksum TEXT NOT NULL,
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
    ))
    .await?;
    let done: Vec<(i32, String)> = tx
        .query(
            &format!("SELECT version, checksum FROM {HISTORY_TABLE}"),
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let mut applied = Vec::new();
    for m in ALL {
        match done.iter().find(|(v, _)| *v == m.version) {
            Some((_, sum)) if *sum == m.checksum() => continue,
            Some(_) => bail!(
                "migration {} ({}) changed after it was applied; restore it and add a new one",
                m.version,
                m.name
            ),
            None => {}
        }
        tx.batch_execute(m.sql)
            .await
            .with_context(|| format!("migration {} ({})", m.version, m.name))?;
        tx.execute(
            &format!("INSERT INTO {HISTORY_TABLE} (version, name, checksum) VALUES ($1, $2, $3)"),
            &[&m.version, &m.name, &m.checksum()],
        )
        .await?;
        applied.push(m.version);
    }
    tx.commit().await.context("committing the migrations")?;
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_in_order_and_unique() {
        let versions: Vec<i32> = ALL.iter().map(|m| m.version).collect();
        let mut sorted = versions.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(versions, sorted);
        assert_eq!(ALL[0].checksum().len(), 64);
        assert_ne!(ALL[0].checksum(), ALL[1].checksum());
    }

    #[test]
    fn the_trigger_notifies_the_shared_channel() {
        let channel = crm_events_contracts::outbox::NOTIFY_CHANNEL;
        assert!(ALL[1].sql.contains(&format!("pg_notify('{channel}'")));
    }
}
