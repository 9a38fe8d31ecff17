//! The runtime: one wasmtime engine, every component compiled once and
//! pre-instantiated, and a fresh instance per request, as Spin runs WASI 0.2
//! HTTP components.
//!
//! Where a component or a client can tell, it answers as `spin up` (Spin 4) does:
//!
//! * live instances are capped (default 1,000, the size of Spin's instance pool); an
//!   open SSE stream holds its instance, and a request beyond the cap gets Spin's
//!   `500` with an empty body, as does a component that traps or returns no response;
//! * a path no route matches gets Spin's empty `404`; `/.well-known/spin/health`
//!   and `/.well-known/spin/info` answer as Spin's do;
//! * every request carries Spin's `spin-*` headers ([`add_spin_headers`]).

use crate::limits::{self, BodyBudget, Connections, RequestBody, ServerLimits};
use crate::manifest::{ComponentSpec, Manifest, Route};
use crate::spin_apis::outbound_http::OutboundHttp;
use crate::spin_apis::shared_redis::SharedRedis;
use anyhow::{anyhow, Context, Result};
use bytes::Bytes;
use crm_events_contracts::http::Refusal;
use crm_events_contracts::{config, guard};
use http_body_util::{BodyExt, Full};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::Semaphore;
use wasmtime::component::{Component, HasSelf, Linker, Resource, ResourceTable};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::p2::types::{HostIncomingRequest, HostResponseOutparam};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// Spin's default cap on live instances.
pub const DEFAULT_MAX_INSTANCES: usize = 1000;

/// How long a Redis command may take (beyond its own block time) by default.
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_secs(2);

/// How to start a host.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// The `spin.toml` to serve.
    pub manifest: PathBuf,
    /// Application variable overrides (beat `SPIN_VARIABLE_*` and defaults).
    pub variables: HashMap<String, String>,
    /// Cap on live instances.
    pub max_instances: usize,
    /// Where compiled components are cached between runs (None: no cache).
    pub cache_dir: Option<PathBuf>,
    /// How long a Redis command may take beyond the time it asks Redis to block
    /// (`None`: forever, as Spin does). See [`crate::spin_apis::redis`].
    pub redis_timeout: Option<Duration>,
    /// Set `TCP_NODELAY` on accepted sockets. Spin 4 does not (small SSE writes
    /// then meet Nagle's algorithm and delayed ACKs), so neither does the host by
    /// default; `make run` turns it on.
    pub tcp_nodelay: bool,
    /// Share Redis between instances ([`crate::spin_apis::shared_redis`]): one
    /// connection per address for their commands, one read per stream for their
    /// blocking `XREAD`s. Off, each `open` connects and each read goes to Redis, as
    /// under Spin.
    pub shared_redis: bool,
    /// Write `/tmp/perf-<pid>.map` so `perf` names the components' compiled
    /// functions (profiling; the first host of a process decides, as the engine is
    /// shared).
    pub perf_map: bool,
    /// The bounds on clients: connections, head and body time, body size.
    pub limits: ServerLimits,
    /// Threads that serve connections, each with a runtime of its own
    /// ([`crate::workers`]); 0 serves them on the listener's runtime.
    pub workers: usize,
}

impl HostConfig {
    /// Serves `manifest` with defaults.
    pub fn new(manifest: impl Into<PathBuf>) -> Self {
        Self {
            manifest: manifest.into(),
            variables: HashMap::new(),
            max_instances: DEFAULT_MAX_INSTANCES,
            cache_dir: None,
            redis_timeout: Some(DEFAULT_REDIS_TIMEOUT),
            tcp_nodelay: false,
            shared_redis: true,
            perf_map: false,
            limits: ServerLimits::default(),
            workers: 0,
        }
    }

    /// Sets an application variable.
    pub fn variable(mut self, name: &str, value: impl Into<String>) -> Self {
        self.variables.insert(name.to_string(), value.into());
        self
    }
}

/// Per-instance state: WASI, wasi:http, the resource table and the component's spec.
pub struct InstanceState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    http_hooks: OutboundHttp,
    pub(crate) table: ResourceTable,
    pub(crate) component: Arc<ComponentSpec>,
    pub(crate) redis_timeout: Option<Duration>,
    /// The host's shared connections and stream reads (`None`: each `open` connects
    /// and each read goes to Redis, as in Spin).
    pub(crate) shared_redis: Option<Arc<SharedRedis>>,
}

impl WasiView for InstanceState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for InstanceState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.http_hooks,
        }
    }
}

struct Loaded {
    spec: Arc<ComponentSpec>,
    pre: ProxyPre<InstanceState>,
    /// The component's `publish_max_body_bytes` (or its default), read once at load.
    publish_max_body_bytes: u64,
}

/// A running app.
pub struct Host {
    manifest: Manifest,
    components: HashMap<String, Loaded>,
    instances: Arc<Semaphore>,
    max_instances: usize,
    redis_timeout: Option<Duration>,
    shared_redis: Option<Arc<SharedRedis>>,
    tcp_nodelay: bool,
    limits: ServerLimits,
    workers: usize,
    connections: Arc<Connections>,
    body_budget: BodyBudget,
}

/// The response type the host produces.
pub type HostResponse = hyper::Response<HyperOutgoingBody>;

impl Host {
    /// Reads the manifest and compiles every component (in parallel, cached).
    pub async fn load(config: HostConfig) -> Result<Arc<Self>> {
        let manifest = Manifest::load(&config.manifest, &config.variables)?;
        let engine = shared_engine(config.perf_map)?;

        let mut linker: Linker<InstanceState> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(|e| anyhow!("{e:?}"))?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(|e| anyhow!("{e:?}"))?;
        crate::spin_apis::SpinImports::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
            .map_err(|e| anyhow!("{e:?}"))?;

        let compiles = manifest.components.values().cloned().map(|spec| {
            let engine = engine.clone();
            let cache = config.cache_dir.clone();
            tokio::task::spawn_blocking(move || {
                compile(&engine, &spec.source, cache.as_deref())
                    .with_context(|| format!("component {} ({})", spec.id, spec.source.display()))
                    .map(|c| (spec, c))
            })
        });
        let mut components = HashMap::new();
        for compiled in futures::future::join_all(compiles).await {
            let (spec, component) = compiled??;
            let pre = linker
                .instantiate_pre(&component)
                .and_then(ProxyPre::new)
                .map_err(|e| anyhow!("component {}: {e:?}", spec.id))?;
            components.insert(
                spec.id.clone(),
                Loaded {
                    publish_max_body_bytes: publish_max_body_bytes(&spec),
                    spec: Arc::new(spec),
                    pre,
                },
            );
        }
        Ok(Arc::new(Self {
            manifest,
            components,
            instances: Arc::new(Semaphore::new(config.max_instances)),
            max_instances: config.max_instances,
            redis_timeout: config.redis_timeout,
            shared_redis: config.shared_redis.then(SharedRedis::new),
            tcp_nodelay: config.tcp_nodelay,
            body_budget: BodyBudget::new(config.limits.max_buffered_body_bytes),
            limits: config.limits,
            workers: config.workers,
            connections: Arc::default(),
        }))
    }

    /// Whether accepted sockets get `TCP_NODELAY` ([`HostConfig::tcp_nodelay`]).
    pub fn tcp_nodelay(&self) -> bool {
        self.tcp_nodelay
    }

    /// Threads that serve connections ([`HostConfig::workers`]).
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// The bounds on clients.
    pub fn limits(&self) -> &ServerLimits {
        &self.limits
    }

    /// The open connections (the listener admits and counts them).
    pub fn connections(&self) -> &Arc<Connections> {
        &self.connections
    }

    /// KiB of the request-body budget not reserved now (`None`: no budget).
    pub fn body_budget_kib_left(&self) -> Option<usize> {
        self.body_budget.kib_left()
    }

    /// Instances currently alive (requests in flight, open streams included).
    pub fn live_instances(&self) -> usize {
        self.max_instances - self.instances.available_permits()
    }

    /// Serves one request.
    pub async fn handle<B>(&self, mut req: hyper::Request<B>, peer: SocketAddr) -> HostResponse
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error> + std::error::Error + Send + Sync + 'static,
    {
        let path = req.uri().path().to_string();
        if req.uri().authority().is_none() && !req.headers().contains_key(hyper::header::HOST) {
            // HTTP/1.1 requires Host; without it there is no URL to hand the component.
            return json(
                400,
                r#"{"ok":false,"error":"bad_request","message":"the request has no Host header"}"#,
            );
        }
        if let Some(well_known) = path.strip_prefix(WELL_KNOWN_PREFIX) {
            return self.well_known(well_known);
        }
        let Some((route, loaded)) = self
            .manifest
            .route_match(&path)
            .and_then(|(route, id)| Some((route, self.components.get(id)?)))
        else {
            return empty(404);
        };
        add_spin_headers(&mut req, peer, route);
        // The body before the instance: a client that is slow to send it, or sends
        // too much, never holds one.
        let req = match self.bounded_body(req, loaded).await {
            Ok(req) => req,
            Err(refusal) => return refused(&refusal),
        };
        let Ok(permit) = self.instances.clone().try_acquire_owned() else {
            tracing::warn!(path, max = self.max_instances, "instance limit reached");
            return empty(500);
        };
        match self.run(loaded, req, permit).await {
            Ok(resp) => resp,
            Err(e) => {
                tracing::error!(path, error = %format!("{e:#}"), "component failed");
                empty(500)
            }
        }
    }

    /// The request with its body read within the route's limit and deadline, or
    /// passed through as it streams when the host runs Spin-like.
    async fn bounded_body<B>(
        &self,
        req: hyper::Request<B>,
        loaded: &Loaded,
    ) -> Result<hyper::Request<RequestBody>, Refusal>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error> + std::error::Error + Send + Sync + 'static,
    {
        if self.limits.spin_like {
            return Ok(limits::streamed(req));
        }
        let (method, path) = (req.method().as_str(), req.uri().path());
        let limit = guard::body_limit(method, path, loaded.publish_max_body_bytes);
        limits::read_body(req, limit, self.limits.body_timeout, &self.body_budget).await
    }

    /// Spin's own paths: `health` answers `OK`, `info` the app's name and version.
    fn well_known(&self, what: &str) -> HostResponse {
        match what {
            "health" => whole(200, "text/plain", Bytes::from_static(b"OK")),
            "info" => {
                let info = serde_json::json!({
                    "name": self.manifest.name,
                    "version": self.manifest.version,
                    "oci_image_digest": null,
                });
                let body = serde_json::to_vec_pretty(&info).unwrap_or_default();
                whole(200, "application/json", Bytes::from(body))
            }
            _ => empty(404),
        }
    }

    async fn run(
        &self,
        loaded: &Loaded,
        req: hyper::Request<RequestBody>,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) -> Result<HostResponse> {
        let mut store = self.new_store(loaded);
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let req = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, req)
            .map_err(|e| anyhow!("{e:?}"))?;
        let out = store
            .data_mut()
            .http()
            .new_response_outparam(sender)
            .map_err(|e| anyhow!("{e:?}"))?;
        let task = spawn_instance(loaded, store, req, out, permit);
        match receiver.await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(code)) => Err(anyhow!("component answered with error {code:?}")),
            Err(_) => match task.await {
                Ok(Ok(())) => Err(anyhow!("component returned without a response")),
                Ok(Err(e)) => Err(e),
                Err(e) => Err(e.into()),
            },
        }
    }

    /// A fresh store for one instance of `loaded`.
    fn new_store(&self, loaded: &Loaded) -> Store<InstanceState> {
        Store::new(
            loaded.pre.engine(),
            InstanceState {
                wasi: WasiCtx::builder().inherit_stderr().inherit_stdout().build(),
                http: WasiHttpCtx::new(),
                http_hooks: OutboundHttp {
                    component: loaded.spec.clone(),
                },
                table: ResourceTable::new(),
                component: loaded.spec.clone(),
                redis_timeout: self.redis_timeout,
                shared_redis: self.shared_redis.clone(),
            },
        )
    }
}

/// A component's `publish_max_body_bytes` variable, or the default when it has none.
fn publish_max_body_bytes(spec: &ComponentSpec) -> u64 {
    spec.variables
        .get(config::PUBLISH_MAX_BODY_BYTES)
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(config::DEFAULT_PUBLISH_MAX_BODY_BYTES)
}

/// Where Spin's own paths live.
const WELL_KNOWN_PREFIX: &str = "/.well-known/spin/";

/// The headers Spin adds to every request a component sees (client-sent headers of
/// the same names are replaced, so a client cannot pose as another address).
pub fn add_spin_headers<B>(req: &mut hyper::Request<B>, peer: SocketAddr, route: &Route) {
    for (name, value) in spin_headers(req, peer, route) {
        if let Ok(value) = hyper::header::HeaderValue::from_str(&value) {
            req.headers_mut().insert(name, value);
        }
    }
}

/// Spin's `spin-*` headers for a request matched by `route`, with Spin's values:
/// `spin-full-url` (`http://<Host><path and query>`), `spin-path-info` (what the
/// wildcard matched), `spin-matched-route` and `spin-raw-component-route` (the route
/// as written), `spin-component-route` (the route without `/...`),
/// `spin-base-path` (`/`) and `spin-client-addr` (the peer, `ip:port`).
pub fn spin_headers<B>(
    req: &hyper::Request<B>,
    peer: SocketAddr,
    route: &Route,
) -> [(&'static str, String); 7] {
    let path = req.uri().path().to_string();
    let path_and_query = req
        .uri()
        .path_and_query()
        .map_or(path.clone(), |p| p.to_string());
    let host = req
        .headers()
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost")
        .to_string();
    let path_info = match route {
        Route::Exact(_) => String::new(),
        Route::Wildcard(prefix) => path.strip_prefix(prefix.as_str()).unwrap_or("").to_string(),
    };
    let component_route = match route {
        Route::Exact(p) => p.clone(),
        Route::Wildcard(prefix) => prefix.clone(),
    };
    [
        ("spin-full-url", format!("http://{host}{path_and_query}")),
        ("spin-path-info", path_info),
        ("spin-matched-route", route.pattern()),
        ("spin-base-path", "/".to_string()),
        ("spin-raw-component-route", route.pattern()),
        ("spin-component-route", component_route),
        ("spin-client-addr", peer.to_string()),
    ]
}

/// Runs the instance in its own task: it keeps streaming after the headers are out,
/// and holds its slot under the instance cap until it returns.
fn spawn_instance(
    loaded: &Loaded,
    mut store: Store<InstanceState>,
    req: Resource<HostIncomingRequest>,
    out: Resource<HostResponseOutparam>,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> tokio::task::JoinHandle<Result<()>> {
    let pre = loaded.pre.clone();
    let id = loaded.spec.id.clone();
    tokio::spawn(async move {
        let _permit = permit;
        let result = async {
            let proxy = pre.instantiate_async(&mut store).await?;
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, req, out)
                .await
        }
        .await;
        if let Err(e) = &result {
            tracing::error!(component = id, error = ?e, "instance trapped");
        }
        result.map_err(|e| anyhow!("{e:?}"))
    })
}

/// Compiles a component, reusing a cached compilation when the bytes and the engine
/// are the same as last time.
fn compile(engine: &Engine, source: &Path, cache: Option<&Path>) -> Result<Component> {
    let bytes = std::fs::read(source).with_context(|| {
        format!(
            "reading {} (build the components first: make components)",
            source.display()
        )
    })?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    engine.precompile_compatibility_hash().hash(&mut h);
    let key = h.finish();
    // Every host in this process shares the engine, so a component is compiled once
    // per process however many hosts load it (tests start many).
    static COMPILED: OnceLock<Mutex<HashMap<u64, Component>>> = OnceLock::new();
    let memo = COMPILED.get_or_init(Default::default);
    if let Some(c) = memo.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
        return Ok(c.clone());
    }
    let component = compile_cached(engine, source, &bytes, key, cache)?;
    memo.lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(key, component.clone());
    Ok(component)
}

/// The engine every host in this process uses.
fn shared_engine(perf_map: bool) -> Result<Engine> {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    if let Some(e) = ENGINE.get() {
        return Ok(e.clone());
    }
    let mut config = Config::new();
    if perf_map {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    let engine = Engine::new(&config).map_err(|e| anyhow!("{e:?}"))?;
    Ok(ENGINE.get_or_init(|| engine).clone())
}

/// Compiles, or loads the compilation a previous run left in `cache`.
fn compile_cached(
    engine: &Engine,
    source: &Path,
    bytes: &[u8],
    key: u64,
    cache: Option<&Path>,
) -> Result<Component> {
    let Some(cache) = cache else {
        return Component::new(engine, bytes).map_err(|e| anyhow!("{e:?}"));
    };
    let stem = source
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("component");
    let path = cache.join(format!("{stem}-{key:016x}.cwasm"));
    if path.exists() {
        // SAFETY: the file was written by `precompile_component` of an engine with
        // the same compatibility hash (it is in the file name), by this program.
        if let Ok(c) = unsafe { Component::deserialize_file(engine, &path) } {
            return Ok(c);
        }
    }
    let compiled = engine
        .precompile_component(bytes)
        .map_err(|e| anyhow!("{e:?}"))?;
    std::fs::create_dir_all(cache)?;
    // A name of its own per writer; the rename makes the file appear whole.
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let tmp = path.with_extension(format!(
        "tmp{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&tmp, &compiled)?;
    std::fs::rename(&tmp, &path)?;
    // SAFETY: as above; these are the bytes just produced by this engine.
    unsafe { Component::deserialize(engine, &compiled) }.map_err(|e| anyhow!("{e:?}"))
}

/// A refusal the host answers itself, as the components would (JSON body).
fn refused(refusal: &Refusal) -> HostResponse {
    let body = full(Bytes::from(refusal.body()));
    let mut builder = hyper::Response::builder().status(refusal.status);
    for (name, value) in refusal.headers() {
        builder = builder.header(name, value);
    }
    builder.body(body).expect("a refusal's headers are valid")
}

/// A whole body, as a response body.
fn full(body: Bytes) -> HyperOutgoingBody {
    Full::new(body)
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A response with no body, as Spin sends its `404` and `500`.
fn empty(status: u16) -> HostResponse {
    respond(status, None, Bytes::new())
}

fn json(status: u16, body: &'static str) -> HostResponse {
    whole(
        status,
        "application/json",
        Bytes::from_static(body.as_bytes()),
    )
}

fn whole(status: u16, content_type: &'static str, body: Bytes) -> HostResponse {
    respond(status, Some(content_type), body)
}

/// A response the host makes itself, with the whole body at once.
fn respond(status: u16, content_type: Option<&'static str>, body: Bytes) -> HostResponse {
    let body = full(body);
    let mut builder = hyper::Response::builder().status(status);
    if let Some(content_type) = content_type {
        builder = builder.header("content-type", content_type);
    }
    builder.body(body).expect("static response")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(uri: &str) -> hyper::Request<()> {
        hyper::Request::get(uri)
            .header("host", "crm.example:3000")
            .header("spin-client-addr", "6.6.6.6:1")
            .body(())
            .unwrap()
    }

    /// The values Spin 4 gives a wildcard route, an exact route and the root
    /// wildcard; a client's own `spin-client-addr` does not survive.
    #[test]
    fn spin_headers_carry_spins_values() {
        let peer: SocketAddr = "127.0.0.1:5555".parse().unwrap();
        let mut req = request("/ops/crm-events?since=1");
        add_spin_headers(&mut req, peer, &Route::Wildcard("/ops".into()));
        let h = |name: &str| req.headers()[name].to_str().unwrap().to_string();
        assert_eq!(
            h("spin-full-url"),
            "http://crm.example:3000/ops/crm-events?since=1"
        );
        assert_eq!(h("spin-path-info"), "/crm-events");
        assert_eq!(h("spin-matched-route"), "/ops/...");
        assert_eq!(h("spin-raw-component-route"), "/ops/...");
        assert_eq!(h("spin-component-route"), "/ops");
        assert_eq!(h("spin-base-path"), "/");
        assert_eq!(h("spin-client-addr"), "127.0.0.1:5555");

        let exact = spin_headers(&request("/healthz"), peer, &Route::Exact("/healthz".into()));
        assert_eq!(exact[1], ("spin-path-info", String::new()));
        assert_eq!(exact[5], ("spin-component-route", "/healthz".to_string()));
        let root = spin_headers(&request("/anything"), peer, &Route::Wildcard(String::new()));
        assert_eq!(root[1], ("spin-path-info", "/anything".to_string()));
        assert_eq!(root[2], ("spin-matched-route", "/...".to_string()));
    }
}
