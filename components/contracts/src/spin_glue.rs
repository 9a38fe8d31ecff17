//! Glue between the Spin SDK and the contracts, shared by every component.
//!
//! Only compiled with the `spin` feature (the components turn it on; the sidecar
//! does not). Handlers stay thin: they read variables, talk to Redis and build
//! responses through these helpers, and make every decision in the other modules.

use crate::config::Variables;
use crate::keys::Keys;
use crate::reply::Reply;
use spin_sdk::http::{Fields, Method, OutgoingResponse, Request, Response, ResponseOutparam};
use spin_sdk::redis::{Connection, RedisParameter, RedisResult};

/// Spin application variables (`spin_sdk::variables`).
pub struct SpinVariables;

impl Variables for SpinVariables {
    fn get(&self, name: &str) -> Option<String> {
        spin_sdk::variables::get(name).ok()
    }
}

/// A Redis failure, with Spin's error rendered as text.
#[derive(Debug, Clone, thiserror::Error)]
#[error("redis: {0}")]
pub struct RedisError(pub String);

/// One outbound Redis connection (Spin opens a dedicated connection per `open`).
pub struct Redis {
    conn: Connection,
}

impl Redis {
    /// Connects to `address` (a `redis://` URL that `allowed_outbound_hosts` permits).
    pub fn open(address: &str) -> Result<Self, RedisError> {
        Connection::open(address)
            .map(|conn| Self { conn })
            .map_err(|e| RedisError(format!("{e:?}")))
    }

    /// Runs a command; arguments are sent as binary strings.
    pub fn run(&self, command: &str, args: &[&str]) -> Result<Vec<Reply>, RedisError> {
        let args: Vec<RedisParameter> = args
            .iter()
            .map(|a| RedisParameter::Binary(a.as_bytes().to_vec()))
            .collect();
        let results = self
            .conn
            .execute(command, &args)
            .map_err(|e| RedisError(format!("{e:?}")))?;
        Ok(results
            .into_iter()
            .map(|r| match r {
                RedisResult::Nil => Reply::Nil,
                RedisResult::Status(s) => Reply::Status(s),
                RedisResult::Int64(i) => Reply::Int(i),
                RedisResult::Binary(b) => Reply::Bytes(b),
            })
            .collect())
    }

    /// Runs a command whose reply is one integer.
    pub fn run_int(&self, command: &str, args: &[&str]) -> Result<i64, RedisError> {
        let reply = self.run(command, args)?;
        reply
            .first()
            .and_then(Reply::as_int)
            .ok_or_else(|| RedisError(format!("{command}: expected an integer, got {reply:?}")))
    }

    /// Counts one request in `crm_events_http_requests_total`.
    pub fn count_request(&self, keys: &Keys, method: &str, path: &str) -> Result<(), RedisError> {
        let field = crate::http::request_counter_field(method, path);
        self.run("HINCRBY", &[&keys.http_requests(), &field, "1"])
            .map(|_| ())
    }
}

/// Counts a request, best effort: a metrics write must never fail the request.
pub fn count_request_best_effort(address: &str, keys: &Keys, method: &str, path: &str) {
    if let Ok(redis) = Redis::open(address) {
        let _ = redis.count_request(keys, method, path);
    }
}

/// The 405 answer for anything but `GET`/`HEAD`, or `None` when the method is fine.
pub fn reject_unless_get(req: &Request) -> Option<Response> {
    if matches!(req.method(), Method::Get | Method::Head) {
        return None;
    }
    let mut r = json_response(
        405,
        crate::http::error_body("method_not_allowed", "use GET", &[]),
    );
    r.set_header("allow", "GET, HEAD");
    Some(r)
}

/// A complete response with a JSON body.
pub fn json_response(status: u16, body: String) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", crate::http::JSON)
        .header("cache-control", "no-store")
        .body(body)
        .build()
}

/// Headers for a streamed response.
pub fn fields(headers: &[(&str, &str)]) -> Fields {
    let list: Vec<(String, Vec<u8>)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
        .collect();
    Fields::from_list(&list).expect("static header names are valid")
}

/// Sends a complete response through a streaming handler's outparam.
pub async fn send_whole(
    out: ResponseOutparam,
    status: u16,
    headers: &[(&str, &str)],
    body: String,
) {
    let response = OutgoingResponse::new(fields(headers));
    // The status codes used here are all valid; a failure leaves Spin's default 200.
    let _ = response.set_status_code(status);
    // The client may already be gone; there is nobody left to tell.
    let _ = out.set_with_body(response, body.into_bytes()).await;
}
