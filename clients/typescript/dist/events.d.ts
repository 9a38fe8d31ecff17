/**
 * `<ms>-<seq>.<epoch>`: the Redis stream id and the stream's epoch. Send the last one back as `Last-Event-ID` (or `?last_event_id=`) to resume exactly after it.
 */
export type EventId = string;
export interface Connected {
    kind: "connected";
    topic: string;
    group: string;
    /**
     * The position the stream starts after (also the frame's id).
     */
    resume_from: string;
    /**
     * The stream's epoch: a new one means Redis lost the stream's data.
     */
    epoch: string | null;
}
/**
 * An event on the all-tenants stream (operator tokens): with its Kafka coordinates, which identify it across epochs.
 */
export interface DomainEvent {
    kind: "domain_event";
    /**
     * The Kafka topic.
     */
    topic: string;
    /**
     * The Kafka timestamp, ms since the epoch.
     */
    timestamp: number | null;
    /**
     * The record key: a string when it is UTF-8, `{"base64": …}` otherwise, or null.
     */
    key: string | null | {
        base64: string;
    };
    /**
     * The Kafka value: its JSON when it is JSON (a CRM event: `Type`, `TenantId` and the entity's fields); otherwise as `value_encoding` says.
     */
    value: {
        [k: string]: unknown | undefined;
    } | unknown[] | string | number | boolean | null;
    /**
     * Present only when `value` is not the record's JSON: `text` (a string), `base64` (binary), `oversize` (`value` is null, see `value_size`), `none` (a tombstone).
     */
    value_encoding?: "text" | "base64" | "oversize" | "none";
    /**
     * The value's size in bytes, when it was too large to include.
     */
    value_size?: number;
    /**
     * The Kafka partition (operators only).
     */
    partition: number;
    /**
     * The Kafka offset (operators only).
     */
    offset: number;
    /**
     * Record headers (name → UTF-8 string, or `{"base64": …}`), present when the record has any.
     */
    headers?: {
        [k: string]: string | {
            base64: string;
        } | undefined;
    };
}
/**
 * An event on a tenant's stream: nothing that counts other tenants' events (no `partition`, `offset` or `outbox-id` header).
 */
export interface TenantDomainEvent {
    kind: "domain_event";
    /**
     * The Kafka topic.
     */
    topic: string;
    /**
     * The Kafka timestamp, ms since the epoch.
     */
    timestamp: number | null;
    /**
     * The record key: a string when it is UTF-8, `{"base64": …}` otherwise, or null.
     */
    key: string | null | {
        base64: string;
    };
    /**
     * The Kafka value: its JSON when it is JSON (a CRM event: `Type`, `TenantId` and the entity's fields); otherwise as `value_encoding` says.
     */
    value: {
        [k: string]: unknown | undefined;
    } | unknown[] | string | number | boolean | null;
    /**
     * Present only when `value` is not the record's JSON: `text` (a string), `base64` (binary), `oversize` (`value` is null, see `value_size`), `none` (a tombstone).
     */
    value_encoding?: "text" | "base64" | "oversize" | "none";
    /**
     * The value's size in bytes, when it was too large to include.
     */
    value_size?: number;
    /**
     * Record headers (name → UTF-8 string, or `{"base64": …}`), present when the record has any. The `outbox-id` header is never in a tenant's cut.
     */
    headers?: {
        [k: string]: string | {
            base64: string;
        } | undefined;
    };
}
export interface Gap {
    kind: "gap";
    /**
     * `trimmed`: history before `oldest` was removed by retention. `reset`: the stream is behind the requested position (Redis lost its data); it replays what it holds.
     */
    reason: "trimmed" | "reset";
    /**
     * The position the client asked to resume after.
     */
    requested: string;
    /**
     * The oldest entry still held (null: the stream is empty).
     */
    oldest: string | null;
    /**
     * Its time, ms since the epoch.
     */
    oldest_timestamp: number | null;
}
export interface Reset {
    kind: "reset";
    /**
     * Why the stream starts over. At connect, `epoch_changed`: the position is of an epoch that is gone (Redis lost the stream it belonged to). Mid-stream, why the sidecar began a new epoch: Redis was flushed or restarted empty (`redis_flushed`), came back with less (`redis_behind`), or was empty when the sidecar started (`redis_missing_at_start`). `stream_changed`: the position was from the all-tenants stream and could not be matched exactly on the tenant's own stream.
     */
    reason: "epoch_changed" | "redis_flushed" | "redis_behind" | "redis_missing_at_start" | "stream_changed";
    /**
     * The position the client had.
     */
    requested: string | null;
    /**
     * The new epoch.
     */
    epoch: string;
    message: string;
}
export interface AuthExpired {
    kind: "auth_expired";
    message: string;
    /**
     * Reconnect with a fresh token and this as `Last-Event-ID`.
     */
    resume_from: string;
}
