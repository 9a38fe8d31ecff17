//! The demo's CRM events: what `make run` writes into the outbox (and what the
//! sidecar's embedded demo produces when there is no Postgres), one definition for
//! both so they look alike in the viewer.

use crate::outbox::Row;

/// The demo tenants: `(tenant id, display name)`. Tenant ids are UUIDs, as the
/// outbox's `tenant_id` column requires.
pub const TENANTS: [(&str, &str); 3] = [
    ("3f8a1c2e-6b4d-4e8f-9a1b-2c3d4e5f6a70", "Acme"),
    ("7d2e9b41-0c5a-4f63-8e17-4b9c2d6a8f31", "Globex"),
    ("b45c7e02-93d1-4a8b-a6f4-1e2d3c4b5a92", "Initech"),
];

const STATUSES: [&str; 4] = ["Open", "Scheduled", "InProgress", "Done"];

/// One demo event: its type, tenant and payload (the fields beside `Type`,
/// `TenantId` and `Ts`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoEvent {
    /// `JobCreated`, `JobUpdated`, `JobDeleted`, `ContactCreated`, `ContactUpdated`.
    pub event_type: &'static str,
    /// The tenant's UUID.
    pub tenant_id: &'static str,
    /// The payload JSON object.
    pub payload: String,
}

/// The `n`-th demo event.
pub fn event(n: u64) -> DemoEvent {
    let (tenant_id, tenant_name) = TENANTS[(n % 3) as usize];
    let (event_type, body) = match n % 10 {
        0..=3 => (
            "JobCreated",
            format!(r#""JobId":"job-{n}","Title":"Service visit #{n}","Status":"Open""#),
        ),
        4..=6 => (
            "JobUpdated",
            format!(
                r#""JobId":"job-{}","Title":"Service visit #{}","Status":"{}""#,
                n - 4,
                n - 4,
                STATUSES[(n % 4) as usize]
            ),
        ),
        7 => ("JobDeleted", format!(r#""JobId":"job-{}""#, n - 7)),
        8 => (
            "ContactCreated",
            format!(
                r#""ContactId":"contact-{n}","Name":"Contact {n}","Email":"contact{n}@example.com""#
            ),
        ),
        _ => (
            "ContactUpdated",
            format!(
                r#""ContactId":"contact-{}","Phone":"+1-555-01{:02}""#,
                n - 1,
                n % 100
            ),
        ),
    };
    DemoEvent {
        event_type,
        tenant_id,
        payload: format!(r#"{{{body},"TenantName":"{tenant_name}"}}"#),
    }
}

impl DemoEvent {
    /// As an outbox row (what the publisher would read back).
    pub fn row(&self, id: i64, occurred_at_ms: i64) -> Row {
        Row {
            id,
            tenant_id: self.tenant_id.to_string(),
            event_type: self.event_type.to_string(),
            payload: self.payload.clone(),
            occurred_at_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::KeyBy;

    #[test]
    fn demo_events_become_the_values_clients_expect() {
        for n in 0..20 {
            let e = event(n);
            let v: serde_json::Value =
                serde_json::from_str(&e.row(1, 1_730_592_000_000).record(&KeyBy::Tenant).value)
                    .unwrap();
            assert_eq!(v["Type"], e.event_type);
            assert!(TENANTS.iter().any(|(id, _)| v["TenantId"] == *id));
            assert!(v["TenantName"].is_string());
            assert_eq!(v["Ts"], "2024-11-03T00:00:00.000Z");
            assert!(uuid::Uuid::parse_str(e.tenant_id).is_ok());
        }
    }
}
