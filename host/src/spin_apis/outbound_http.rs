//! `wasi:http/outgoing-handler` with Spin's `allowed_outbound_hosts` check: a request
//! to a URL the component's manifest entry does not list fails with
//! `HttpRequestDenied` before any connection is made, as under `spin up`.

use super::address_allowed;
use crate::manifest::ComponentSpec;
use hyper::http;
use std::future::Future;
use std::sync::Arc;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

/// The per-instance hooks: the component whose `allowed_outbound_hosts` apply
/// (shared with the instance, not copied per request).
pub struct OutboundHttp {
    pub(crate) component: Arc<ComponentSpec>,
}

/// What `send_request` hands back.
type Sent = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), Error>> + Send>,
                ),
                Error,
            >,
        > + Send,
>;

impl WasiHttpHooks for OutboundHttp {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Sent {
        let uri = request.uri();
        let default_port = if uri.scheme() == Some(&http::uri::Scheme::HTTPS) {
            443
        } else {
            80
        };
        if !address_allowed(
            &uri.to_string(),
            &self.component.allowed_outbound_hosts,
            default_port,
        ) {
            tracing::warn!(host = ?uri.host(), "outbound HTTP denied by allowed_outbound_hosts");
            return Box::new(async { Err(Error::HttpRequestDenied) });
        }
        _ = fut;
        Box::new(async move {
            use http_body_util::BodyExt;
            let (res, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                res.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = Result<(), Error>> + Send>,
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    /// A URL that is not listed is refused without a connection (port 9 on
    /// loopback would refuse one; the error says "denied", not "refused").
    #[tokio::test]
    async fn unlisted_urls_are_denied() {
        let mut hooks = OutboundHttp {
            component: Arc::new(ComponentSpec {
                id: "c".into(),
                source: "c.wasm".into(),
                variables: Default::default(),
                allowed_outbound_hosts: vec!["https://api.example:443".to_string()],
                build_command: None,
            }),
        };
        let body = http_body_util::Empty::new()
            .map_err(|never| match never {})
            .boxed_unsync();
        let req = http::Request::get("http://127.0.0.1:9/x")
            .body(body)
            .unwrap();
        let sent = Box::into_pin(hooks.send_request(req, None, Box::new(async { Ok(()) })));
        match sent.await {
            Err(Error::HttpRequestDenied) => {}
            Err(other) => panic!("expected HttpRequestDenied, got {other:?}"),
            Ok(_) => panic!("an unlisted host was reached"),
        }
    }
}
