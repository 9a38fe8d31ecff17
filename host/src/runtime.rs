//! The runtime: one wasmtime engine, every component compiled once and
//! pre-instantiated, and a fresh instance per request, as Spin runs WASI 0.2
//! HTTP components.
//!
//! Like Spin, it caps live instances (default 1,000, Spin's
//! `SPIN_MAX_INSTANCE_COUNT` default): an open SSE stream holds its instance, and a
//! request beyond the cap fails with a 500 as it does in Spin.

use crate::manifest::{ComponentSpec, Manifest, Route};
use anyhow::{anyhow, Context, Result};
use bytes::Bytes;
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
    pub(crate) table: ResourceTable,
    pub(crate) component: Arc<ComponentSpec>,
    pub(crate) redis_timeout: Option<Duration>,
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
            hooks: Default::default(),
        }
    }
}

struct Loaded {
    spec: Arc<ComponentSpec>,
    pre: ProxyPre<InstanceState>,
}

/// A running app.
pub struct Host {
    manifest: Manifest,
    components: HashMap<String, Loaded>,
    instances: Arc<Semaphore>,
    max_instances: usize,
    redis_timeout: Option<Duration>,
}

/// The response type the host produces.
pub type HostResponse = hyper::Response<HyperOutgoingBody>;

impl Host {
    /// Reads the manifest and compiles every component (in parallel, cached).
    pub async fn load(config: HostConfig) -> Result<Arc<Self>> {
        let manifest = Manifest::load(&config.manifest, &config.variables)?;
        let engine = shared_engine()?;

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
        }))
    }

    /// Instances currently alive (requests in flight, open streams included).
    pub fn live_instances(&self) -> usize {
        self.max_instances - self.instances.available_permits()
    }

    /// Serves one request.
    pub async fn handle<B>(&self, mut req: hyper::Request<B>, peer: SocketAddr) -> HostResponse
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let path = req.uri().path().to_string();
        if req.uri().authority().is_none() && !req.headers().contains_key(hyper::header::HOST) {
            // HTTP/1.1 requires Host; without it there is no URL to hand the component.
            return json(
                400,
                r#"{"ok":false,"error":"bad_request","message":"the request has no Host header"}"#,
            );
        }
        let Some((route, loaded)) = self
            .manifest
            .route_match(&path)
            .and_then(|(route, id)| Some((route, self.components.get(id)?)))
        else {
            return plain(404, "Not Found");
        };
        add_spin_headers(&mut req, peer, route);
        let Ok(permit) = self.instances.clone().try_acquire_owned() else {
            tracing::warn!(path, max = self.max_instances, "instance limit reached");
            return plain(500, "Internal Server Error: instance limit reached");
        };
        match self.run(loaded, req, permit).await {
            Ok(resp) => resp,
            Err(e) => {
                tracing::error!(path, error = %format!("{e:#}"), "component failed");
                plain(500, "Internal Server Error")
            }
        }
    }

    async fn run<B>(
        &self,
        loaded: &Loaded,
        req: hyper::Request<B>,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) -> Result<HostResponse>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let mut store = new_store(loaded, self.redis_timeout);
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
}

/// The headers Spin adds to every request a component sees (client-sent headers of
/// the same names are replaced, so a client cannot pose as another address).
fn add_spin_headers<B>(req: &mut hyper::Request<B>, peer: SocketAddr, route: &Route) {
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
    let values = [
        ("spin-client-addr", peer.to_string()),
        ("spin-full-url", format!("http://{host}{path_and_query}")),
        ("spin-path-info", path_info),
        ("spin-matched-route", route.pattern()),
    ];
    let headers = req.headers_mut();
    for (name, value) in values {
        if let Ok(value) = hyper::header::HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
}

/// A fresh store for one instance of `loaded`.
fn new_store(loaded: &Loaded, redis_timeout: Option<Duration>) -> Store<InstanceState> {
    Store::new(
        loaded.pre.engine(),
        InstanceState {
            wasi: WasiCtx::builder().inherit_stderr().inherit_stdout().build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            component: loaded.spec.clone(),
            redis_timeout,
        },
    )
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
fn shared_engine() -> Result<Engine> {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    if let Some(e) = ENGINE.get() {
        return Ok(e.clone());
    }
    let engine = Engine::new(&Config::new()).map_err(|e| anyhow!("{e:?}"))?;
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

fn plain(status: u16, text: &'static str) -> HostResponse {
    whole(status, "text/plain", text)
}

fn json(status: u16, body: &'static str) -> HostResponse {
    whole(status, "application/json", body)
}

fn whole(status: u16, content_type: &'static str, text: &'static str) -> HostResponse {
    let body = Full::new(Bytes::from_static(text.as_bytes()))
        .map_err(|never| match never {})
        .boxed_unsync();
    hyper::Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(body)
        .expect("static response")
}
