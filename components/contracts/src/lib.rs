//! The contracts every part of crm-events agrees on.
//!
//! The Spin components (`wasm32-wasip2`) and the native sidecar both depend on this
//! crate, so the shapes that cross a process boundary are spelled exactly once:
//!
//! * [`auth`]: tokens, keys, identities and scopes (who may see which events).
//! * [`envelope`]: the JSON each SSE `data:` line carries, and how a Kafka value of any
//!   kind (JSON, text, binary, oversize) is represented without being dropped.
//! * [`keys`]: every Redis key name, derived from one prefix.
//! * [`sse`]: the Server-Sent Events frame writer (WHATWG framing, no CR/LF injection).
//! * [`stream_id`]: Redis stream ids, `Last-Event-ID` and `since=` parsing.
//! * [`reply`]: reading the flattened replies of Spin's outbound Redis `execute`.
//! * [`config`]: the Spin variable names, their defaults and their validation.
//! * [`demo`]: the demo's CRM events (`make run`).
//! * [`request`]: the SSE request (query, resume position, filters) and its errors.
//! * [`resume`]: where a stream starts, and when to report a `gap`.
//! * [`tenant`]: an event's tenant, and the Redis shard a tenant's stream lives on.
//! * [`http`]: routes, JSON error bodies and CORS decisions shared by the components.
//! * [`guard`]: body limits, body deadlines and the failed-authentication limit
//!   (hostile clients), applied alike by the host and the components.
//! * [`metrics`]: the Prometheus exposition the `/metrics` route renders.
//! * [`outbox`]: what an outbox row becomes in Kafka (value, key, the outbox-id
//!   header) and the publisher's defaults.
//! * [`publish`]: `POST /crm-events`, idempotent publishing: validation, the request
//!   fingerprint, the one atomic SQL statement and what its answer means.
//! * `spin_glue` (feature `spin`): Spin variables, Redis and responses for the components.
//!
//! Nothing here performs I/O; the components and the sidecar do that and call in here
//! for every decision, which keeps the logic unit-testable on the host.

pub mod auth;
pub mod config;
pub mod demo;
pub mod envelope;
pub mod guard;
pub mod http;
pub mod keys;
pub mod metrics;
pub mod outbox;
pub mod publish;
pub mod reply;
pub mod request;
pub mod resume;
#[cfg(feature = "spin")]
pub mod spin_glue;
pub mod sse;
pub mod stream_id;
pub mod tenant;
