//! Glue between the Spin SDK and the contracts, shared by every component.
//!
//! Only compiled with the `spin` feature (the components turn it on; the sidecar
//! does not). Handlers stay thin: they read variables, talk to Redis and build
//! responses through these helpers, and make every decision in the other modules.

use crate::auth::AuthError;
use crate::config::{CommonConfig, Variables};
use crate::guard::{
    AuthFailureLimit, AUTH_FAILURE_WINDOW_MS, COUNT_AUTH_FAILURE, READ_AUTH_FAILURES,
};
use crate::http::Refusal;
use crate::keys::Keys;
use crate::reply::Reply;
use spin_sdk::http::{
    Fields, IncomingRequest, Method, OutgoingResponse, Response, ResponseOutparam,
};
use spin_sdk::redis::{Connection, RedisParameter, RedisResult};

/// Spin application variables (`spin_sdk::variables`).
pub struct SpinVariables;

impl Variables for SpinVariables {
    fn get(&self, name: &str) -> Option<String> {
        spin_sdk::variables::get(name).ok()
    }
}

/// A Redis failure, by what went wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedisError {
    /// No connection could be opened (Redis down, unreachable, or the address is not
    /// in `allowed_outbound_hosts`).
    #[error("redis: cannot connect: {0}")]
    Connection(String),
    /// A command failed: Redis answered with an error, or the connection broke while
    /// it ran. Spin's interface (`fermyon:spin/redis@2.0.0`) reports both as one
    /// `other(string)`, so they cannot be told apart here.
    #[error("redis: {command} failed: {message}")]
    Reply {
        /// The command.
        command: String,
        /// What Spin said.
        message: String,
    },
    /// Redis answered, but not in the shape crm-events writes and expects.
    #[error("redis: unexpected reply to {command}: {detail}")]
    Protocol {
        /// The command.
        command: String,
        /// What was wrong with the reply.
        detail: String,
    },
}

impl RedisError {
    /// A reply of the wrong shape.
    pub fn protocol(command: &str, detail: impl std::fmt::Display) -> Self {
        Self::Protocol {
            command: command.to_string(),
            detail: detail.to_string(),
        }
    }
}

/// Spin's error as text (its `Debug` names the variant, e.g. `InvalidAddress`).
fn spin_message(e: spin_sdk::redis::Error) -> String {
    match e {
        spin_sdk::redis::Error::Other(message) => message,
        other => format!("{other:?}"),
    }
}

/// One outbound Redis connection (Spin opens a dedicated connection per `open`).
pub struct Redis {
    conn: Connection,
}

impl Redis {
    /// Connects to `address` (a `redis://` URL that `allowed_outbound_hosts` permits).
    pub fn open(address: &str) -> Result<Self, RedisError> {
        Connection::open(address)
            .map(|conn| Self { conn })
            .map_err(|e| RedisError::Connection(spin_message(e)))
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
            .map_err(|e| RedisError::Reply {
                command: command.to_string(),
                message: spin_message(e),
            })?;
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
        reply.first().and_then(Reply::as_int).ok_or_else(|| {
            RedisError::protocol(command, format!("expected an integer, got {reply:?}"))
        })
    }

    /// Counts one request in `crm_events_http_requests_total`, best effort (see
    /// [`crate::metrics::HTTP_REQUESTS_TOTAL`] for the rule).
    /// A metrics write must never fail the request it counts: callers may ignore
    /// the result (it tells whether Redis answered).
    pub fn count_request(
        &self,
        keys: &Keys,
        method: &Method,
        path: &str,
    ) -> Result<(), RedisError> {
        let field = crate::http::request_counter_field(&method.to_string(), path);
        self.run("HINCRBY", &[&keys.http_requests(), &field, "1"])
            .map(drop)
    }
}

/// The failed-authentication limit of one client address ([`crate::guard`]), around
/// one authentication attempt.
pub struct AuthGuard<'a> {
    /// Where the counter lives (`None`: Redis is away, and the limit cannot be kept;
    /// the token is still verified).
    pub redis: Option<&'a Redis>,
    /// The key names.
    pub keys: &'a Keys,
    /// The client address.
    pub address: &'a str,
    /// The limit.
    pub limit: AuthFailureLimit,
}

impl AuthGuard<'_> {
    /// Runs `attempt` unless the address has used up its failures (`429`, and the
    /// token is not even verified); a failure of any kind but a missing token is
    /// counted, and answered `401`.
    pub fn authenticate<T>(
        &self,
        attempt: impl FnOnce() -> Result<T, AuthError>,
    ) -> Result<T, Refusal> {
        if let Some(refusal) = self.refusal() {
            return Err(refusal);
        }
        attempt().map_err(|e| {
            if e != AuthError::Missing {
                self.count_failure();
            }
            Refusal::unauthorized(&e)
        })
    }

    /// The `429` when the address is over its limit (best effort: `None` when Redis
    /// does not answer).
    fn refusal(&self) -> Option<Refusal> {
        let redis = self.redis.filter(|_| self.limit.per_minute > 0)?;
        let key = self.keys.auth_failures(self.address);
        let reply = redis.run("EVAL", &[READ_AUTH_FAILURES, "1", &key]).ok()?;
        let int = |i: usize| reply.get(i).and_then(Reply::as_int).unwrap_or(0).max(0) as u64;
        self.limit.refuse(int(0), int(1))
    }

    /// Counts one failure (best effort).
    fn count_failure(&self) {
        let Some(redis) = self.redis.filter(|_| self.limit.per_minute > 0) else {
            return;
        };
        let key = self.keys.auth_failures(self.address);
        let window = AUTH_FAILURE_WINDOW_MS.to_string();
        let _ = redis.run("EVAL", &[COUNT_AUTH_FAILURE, "1", &key, &window]);
    }
}

/// A Postgres failure, by what it means for the answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PostgresError {
    /// No connection (Postgres down or unreachable, or not in
    /// `allowed_outbound_hosts`): `503`, retry.
    #[error("postgres: cannot connect: {0}")]
    Connection(String),
    /// The outbox tables or columns are missing (SQLSTATE 42P01/42703): `500`, run
    /// the migrations.
    #[error("postgres: the outbox tables are missing or not migrated (run `crm-events-outbox migrate`): {0}")]
    Schema(String),
    /// The database refused a value of the request (SQLSTATE class 22, a data
    /// exception, such as text it cannot store): `400`, the client's to fix.
    #[error("the database cannot store a value of this request (SQLSTATE {0})")]
    Data(String),
    /// Any other failure of the statement: `503`.
    #[error("postgres: the statement failed: {0}")]
    Query(String),
}

impl PostgresError {
    /// The refusal to answer with (the address, which holds credentials, is never in it).
    pub fn refusal(&self) -> Refusal {
        match self {
            PostgresError::Schema(_) => Refusal::new(500, "configuration", self.to_string()),
            PostgresError::Data(_) => Refusal::new(400, "bad_request", self.to_string()),
            _ => Refusal::new(503, "postgres_unavailable", self.to_string()).retry_after(5),
        }
    }
}

fn pg_error(e: spin_sdk::pg4::PgError) -> PostgresError {
    use spin_sdk::pg4::{PgError, QueryError};
    match e {
        PgError::ConnectionFailed(m) => PostgresError::Connection(m),
        PgError::QueryFailed(QueryError::DbError(db))
            if ["42P01", "42703"].contains(&db.code.as_str()) =>
        {
            PostgresError::Schema(db.message)
        }
        PgError::QueryFailed(QueryError::DbError(db)) if db.code.starts_with("22") => {
            PostgresError::Data(db.code)
        }
        PgError::QueryFailed(QueryError::DbError(db)) => {
            PostgresError::Query(format!("{} ({})", db.message, db.code))
        }
        PgError::QueryFailed(QueryError::Text(m)) => PostgresError::Query(m),
        other => PostgresError::Query(format!("{other:?}")),
    }
}

/// One outbound Postgres connection (`spin:postgres/postgres@4.0.0`).
pub struct Postgres {
    conn: spin_sdk::pg4::Connection,
}

impl Postgres {
    /// Connects to `address` (a URL that `allowed_outbound_hosts` permits).
    pub fn open(address: &str) -> Result<Self, PostgresError> {
        spin_sdk::pg4::Connection::open(address)
            .map(|conn| Self { conn })
            .map_err(pg_error)
    }

    /// Runs a statement with text parameters (`None` is NULL); one row of cells per
    /// result row (booleans, integers and text; anything else reads as NULL).
    pub fn query(
        &self,
        statement: &str,
        params: &[Option<String>],
    ) -> Result<Vec<Vec<crate::publish::Cell>>, PostgresError> {
        use crate::publish::Cell;
        use spin_sdk::pg4::{DbValue, ParameterValue};
        let params: Vec<ParameterValue> = params
            .iter()
            .map(|p| {
                p.clone()
                    .map_or(ParameterValue::DbNull, ParameterValue::Str)
            })
            .collect();
        let rows = self.conn.query(statement, &params).map_err(pg_error)?;
        let cell = |v: &DbValue| match v {
            DbValue::Boolean(b) => Cell::Bool(*b),
            DbValue::Int16(i) => Cell::Int(i64::from(*i)),
            DbValue::Int32(i) => Cell::Int(i64::from(*i)),
            DbValue::Int64(i) => Cell::Int(*i),
            DbValue::Str(s) => Cell::Text(s.clone()),
            _ => Cell::Null,
        };
        Ok(rows
            .rows
            .iter()
            .map(|r| r.iter().map(cell).collect())
            .collect())
    }
}

/// Seconds since the epoch, by the host's wall clock.
pub fn now_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Counts a request for a component that needs no Redis connection of its own: opens
/// one, counts, closes. Best effort, like [`Redis::count_request`].
pub fn count_request(config: &CommonConfig, method: &Method, path: &str) -> Result<(), RedisError> {
    Redis::open(&config.redis_address)?.count_request(&config.keys, method, path)
}

/// What a handler reads of a request: its method, path, query and headers — never
/// its body. Components take an [`IncomingRequest`] (not the SDK's `Request`, which
/// reads the whole body before the handler runs), so a client that announces a
/// body and never sends it holds no instance of a route that takes none.
pub struct Head {
    /// The method.
    pub method: Method,
    /// The path, without the query.
    pub path: String,
    /// The query, without the `?` (empty when there is none).
    pub query: String,
    headers: Fields,
}

impl Head {
    /// The head of `req`; its body stays unread.
    pub fn of(req: &IncomingRequest) -> Self {
        let path_with_query = req.path_with_query().unwrap_or_default();
        let (path, query) = path_with_query
            .split_once('?')
            .unwrap_or((path_with_query.as_str(), ""));
        Self {
            method: req.method(),
            path: path.to_string(),
            query: query.to_string(),
            headers: req.headers(),
        }
    }

    /// The first value of header `name`, as text (invalid UTF-8 replaced).
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .first()
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    /// The client's address (`spin-client-addr`, or `X-Forwarded-For` behind a
    /// trusted proxy), for per-address limits.
    pub fn client_address(&self, trusted_proxies: &[String]) -> String {
        crate::http::client_address(
            self.header("spin-client-addr").as_deref(),
            self.header("x-forwarded-for").as_deref(),
            trusted_proxies,
        )
    }
}

/// The 405 answer for anything but `GET`/`HEAD`, or `None` when the method is fine.
pub fn reject_unless_get(method: &Method) -> Option<Response> {
    if matches!(method, Method::Get | Method::Head) {
        return None;
    }
    let mut r = refusal_response(&Refusal::new(405, "method_not_allowed", "use GET"));
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

/// A complete response for a refusal.
pub fn refusal_response(refusal: &Refusal) -> Response {
    let mut builder = Response::builder();
    builder.status(refusal.status);
    for (name, value) in refusal.headers() {
        builder.header(name, value);
    }
    builder.body(refusal.body()).build()
}

/// Headers for a streamed response.
pub fn fields(headers: &[(&str, String)]) -> Fields {
    let list: Vec<(String, Vec<u8>)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
        .collect();
    Fields::from_list(&list).expect("header names are static and values come from config")
}

/// Sends a complete response through a streaming handler's outparam.
pub async fn send_whole(
    out: ResponseOutparam,
    status: u16,
    headers: &[(&str, String)],
    body: String,
) {
    let response = OutgoingResponse::new(fields(headers));
    // The status codes used here are all valid; a failure leaves Spin's default 200.
    let _ = response.set_status_code(status);
    // The client may already be gone; there is nobody left to tell.
    let _ = out.set_with_body(response, body.into_bytes()).await;
}

/// Sends a refusal through a streaming handler's outparam, with extra headers.
pub async fn send_refusal(out: ResponseOutparam, extra: &[(&str, String)], refusal: &Refusal) {
    let mut headers = extra.to_vec();
    headers.extend(refusal.headers());
    send_whole(out, refusal.status, &headers, refusal.body()).await
}
