//! Records become envelopes, envelopes become batches.

use crm_events_contracts::envelope::{encode_record, RawRecord};
use crm_events_contracts::outbox;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use std::collections::BTreeMap;

/// One record, ready to write.
#[derive(Debug, Clone)]
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
        let envelope = encode_record(
            RawRecord {
                topic: msg.topic(),
                partition: msg.partition(),
                offset: msg.offset(),
                timestamp,
                key: msg.key(),
                value: msg.payload(),
            },
            headers,
            max_value_bytes,
        );
        Self {
            partition: msg.partition(),
            offset: msg.offset(),
            timestamp,
            envelope,
            outbox_id,
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
            outbox_id: None,
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
