//! Records become envelopes, envelopes become batches.

use crm_events_contracts::envelope::{encode_record, Audience, RawRecord};
use crm_events_contracts::outbox;
use crm_events_contracts::tenant::tenant_of_value;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use std::collections::BTreeMap;

/// One record, ready to write.
#[derive(Debug, Clone, Default)]
pub struct Event {
    /// Kafka partition.
    pub partition: i32,
    /// Kafka offset.
    pub offset: i64,
    /// Kafka timestamp (ms), if any.
    pub timestamp: Option<i64>,
    /// The envelope JSON (one line).
    pub envelope: String,
    /// The outbox row id of a record the outbox publisher produced
    /// ([`crm_events_contracts::outbox::OUTBOX_ID_HEADER`]).
    pub outbox_id: Option<i64>,
    /// The tenant's copy, for events with a tenant: its stream gets it.
    pub tenant: Option<TenantCopy>,
}

/// An event as its tenant's stream holds it.
#[derive(Debug, Clone, Default)]
pub struct TenantCopy {
    /// The tenant (the value's `TenantId`).
    pub id: String,
    /// The tenant's cut of the envelope ([`Audience::Tenant`]).
    pub envelope: String,
}

impl Event {
    /// Builds the event of a consumed record.
    pub fn from_message(msg: &BorrowedMessage<'_>, max_value_bytes: usize) -> Self {
        let headers: Vec<(&str, Option<&[u8]>)> = msg
            .headers()
            .map(|h| h.iter().map(|h| (h.key, h.value)).collect())
            .unwrap_or_default();
        let timestamp = msg.timestamp().to_millis();
        let outbox_id = outbox::outbox_id(headers.iter().copied());
        let record = RawRecord {
            topic: msg.topic(),
            partition: msg.partition(),
            offset: msg.offset(),
            timestamp,
            key: msg.key(),
            value: msg.payload(),
        };
        let tenant = msg
            .payload()
            .and_then(tenant_of_value)
            .map(|id| TenantCopy {
                id,
                envelope: encode_record(
                    record,
                    headers.iter().copied(),
                    max_value_bytes,
                    Audience::Tenant,
                ),
            });
        let envelope = encode_record(record, headers, max_value_bytes, Audience::Operator);
        Self {
            partition: msg.partition(),
            offset: msg.offset(),
            timestamp,
            envelope,
            outbox_id,
            tenant,
        }
    }
}

/// Events on their way to Redis, in consumption order.
#[derive(Debug, Default)]
pub struct Batch {
    /// The events.
    pub events: Vec<Event>,
    /// How many rewinds the consumer had done when it read them: a batch read before
    /// the latest rewind is dropped (its events are read again).
    pub generation: u64,
}

impl Batch {
    /// An empty batch with room for `n` events.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            events: Vec::with_capacity(n),
            generation: 0,
        }
    }

    /// Number of events.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The lowest offset of each partition in the batch.
    pub fn first_offsets(&self) -> BTreeMap<i32, i64> {
        let mut first = BTreeMap::new();
        for e in &self.events {
            let o = first.entry(e.partition).or_insert(e.offset);
            *o = (*o).min(e.offset);
        }
        first
    }

    /// The highest offset of each partition in the batch.
    pub fn last_offsets(&self) -> BTreeMap<i32, i64> {
        let mut last = BTreeMap::new();
        for e in &self.events {
            let o = last.entry(e.partition).or_insert(e.offset);
            *o = (*o).max(e.offset);
        }
        last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(partition: i32, offset: i64) -> Event {
        Event {
            partition,
            offset,
            timestamp: None,
            envelope: "{}".into(),
            ..Event::default()
        }
    }

    #[test]
    fn last_offsets_per_partition() {
        let b = Batch {
            events: vec![ev(0, 5), ev(1, 2), ev(0, 6), ev(2, 9)],
            generation: 0,
        };
        let last = b.last_offsets();
        assert_eq!(last[&0], 6);
        assert_eq!(last[&1], 2);
        assert_eq!(last[&2], 9);
    }
}
