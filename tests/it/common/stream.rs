//! Reading the Redis stream back, and waiting for conditions on it.

use crm_events_contracts::envelope::{encode_record, epoch_marker, Audience, Envelope, RawRecord};
use crm_events_contracts::keys::{Keys, ENVELOPE_FIELD};
use crm_events_contracts::tenant::tenant_of_value;
use crm_events_sidecar::writer::{append_command, TenantShard};
use redis::Commands;
use serde_json::Value;
use std::time::{Duration, Instant};

/// Appends, as the sidecar would, the envelope of the record at `offset` of
/// partition 0 with `key` and `value`, under the stream id `id` (`*`: Redis picks);
/// returns the entry's id.
pub fn append(
    conn: &mut redis::Connection,
    id: &str,
    offset: i64,
    key: Option<&[u8]>,
    value: &str,
) -> String {
    append_both(conn, id, offset, key, value).0
}

/// [`append`], also to the tenant's stream when the value names a tenant; returns
/// the all-tenants stream's id and the tenant stream's.
pub fn append_both(
    conn: &mut redis::Connection,
    id: &str,
    offset: i64,
    key: Option<&[u8]>,
    value: &str,
) -> (String, Option<String>) {
    let env = Envelope::from_record(
        RawRecord {
            topic: "aetherlink.events",
            partition: 0,
            offset,
            timestamp: Some(1_730_592_000_000),
            key,
            value: Some(value.as_bytes()),
        },
        [],
        0,
        Audience::Operator,
    );
    let id = redis::cmd("XADD")
        .arg(Keys::default().stream())
        .arg(id)
        .arg(ENVELOPE_FIELD)
        .arg(env.to_json())
        .query(conn)
        .unwrap();
    let tenant_id = tenant_of_value(value.as_bytes())
        .map(|tenant| append_to_tenant(conn, &tenant, &tenant_cut(offset, key, value)));
    (id, tenant_id)
}

/// The tenant's cut of the envelope [`append`] writes.
fn tenant_cut(offset: i64, key: Option<&[u8]>, value: &str) -> String {
    let record = RawRecord {
        topic: "aetherlink.events",
        partition: 0,
        offset,
        timestamp: Some(1_730_592_000_000),
        key,
        value: Some(value.as_bytes()),
    };
    encode_record(record, [], 0, Audience::Tenant)
}

/// Appends `envelope` to `tenant`'s stream as the sidecar's writer does (its
/// `APPEND` script, in the shard's epoch, which is made when there is none).
pub fn append_to_tenant(conn: &mut redis::Connection, tenant: &str, envelope: &str) -> String {
    let keys = Keys::default();
    let _: Option<String> = redis::cmd("SET")
        .arg(keys.tenants_epoch())
        .arg("testepoch")
        .arg("NX")
        .query(conn)
        .unwrap();
    let epoch: String = conn.get(keys.tenants_epoch()).unwrap();
    let marker = epoch_marker(&epoch, "epoch_started");
    let shard = TenantShard {
        index: 0,
        count: 1,
        maxlen: 10_000,
        retention_ms: 86_400_000,
    };
    let tenants = std::collections::BTreeMap::from([(tenant, vec![envelope])]);
    let () = append_command(&keys, &shard, &epoch, &marker, &tenants)
        .query::<i64>(conn)
        .map(|_| ())
        .unwrap();
    let newest: Vec<(String, Vec<(String, String)>)> = redis::cmd("XREVRANGE")
        .arg(keys.tenant_stream(tenant))
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query(conn)
        .unwrap();
    newest[0].0.clone()
}

/// Every entry: `(id, envelope)`.
pub fn entries(conn: &mut redis::Connection, keys: &Keys) -> Vec<(String, Value)> {
    let raw: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(keys.stream())
        .arg("-")
        .arg("+")
        .query(conn)
        .unwrap();
    raw.into_iter()
        .map(|(id, fields)| {
            assert_eq!(fields.len(), 1, "entry {id} must have exactly one field");
            assert_eq!(fields[0].0, ENVELOPE_FIELD);
            (id, serde_json::from_str(&fields[0].1).unwrap())
        })
        .collect()
}

/// Stream length.
pub fn len(conn: &mut redis::Connection, keys: &Keys) -> usize {
    conn.xlen(keys.stream()).unwrap_or(0)
}

/// Polls `check` until it is true or `timeout` passes (then panics with `what`).
pub fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Waits until every partition's watermark reached `last_offset[p]`.
pub fn wait_for_watermarks(
    redis_url: &str,
    keys: &Keys,
    topic: &str,
    last_offsets: &[i64],
    timeout: Duration,
) {
    wait_for("the watermarks to reach the last offsets", timeout, || {
        let Ok(mut conn) = redis::Client::open(redis_url).and_then(|c| c.get_connection()) else {
            return false;
        };
        last_offsets.iter().enumerate().all(|(p, last)| {
            let mark: Option<i64> = conn
                .hget(keys.offsets(), Keys::offsets_field(topic, p as i32))
                .unwrap_or(None);
            mark == Some(*last)
        })
    });
}

/// Asserts every `(partition, offset)` appears exactly once, in per-partition order,
/// and that the stream holds exactly `per_partition[p]` events of partition p.
pub fn assert_exactly_once(entries: &[(String, Value)], per_partition: &[usize]) {
    let mut next = vec![0i64; per_partition.len()];
    for (id, e) in entries {
        let p = e["partition"].as_i64().unwrap() as usize;
        let o = e["offset"].as_i64().unwrap();
        assert_eq!(
            o, next[p],
            "entry {id}: partition {p} offset {o}, expected {}",
            next[p]
        );
        next[p] += 1;
    }
    let got: Vec<usize> = next.iter().map(|n| *n as usize).collect();
    assert_eq!(got, per_partition, "events per partition");
}

/// Waits until the sidecar has written every produced event (`per_partition[p]`
/// events on partition p), then asserts the stream holds each exactly once, in
/// per-partition order; returns the entries.
pub fn assert_all_relayed_exactly_once(
    redis_url: &str,
    topic: &str,
    per_partition: &[usize],
    timeout: Duration,
) -> Vec<(String, Value)> {
    let keys = Keys::default();
    let last: Vec<i64> = per_partition.iter().map(|n| *n as i64 - 1).collect();
    wait_for_watermarks(redis_url, &keys, topic, &last, timeout);
    let mut conn = redis::Client::open(redis_url)
        .unwrap()
        .get_connection()
        .unwrap();
    let all = entries(&mut conn, &keys);
    assert_eq!(
        all.len(),
        per_partition.iter().sum::<usize>(),
        "stream length"
    );
    assert_exactly_once(&all, per_partition);
    all
}
