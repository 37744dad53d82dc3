//! The kubelet API (upstream's kubelet server on :10250): HTTPS with the node's
//! kubelet-serving certificate, client certificates verified against the cluster CA
//! (`tls`), and every request authorised by the apiserver through a SubjectAccessReview
//! (`authz`), as upstream's `--authentication-token-webhook=false --client-ca-file
//! --authorization-mode=Webhook` with anonymous access off:
//! - no client certificate → 401 Unauthorized, whatever the path;
//! - the attributes asked are upstream's `GetRequestAttributes`: resource `nodes`, this node's
//!   name, subresource `stats`, `metrics`, `log` or `spec` by path prefix and `proxy` for
//!   everything else (`/containerLogs`, `/exec`, ...); the verb follows the HTTP method
//!   (GET → get, POST → create, ...), except that the streaming endpoints (`/exec`,
//!   `/attach`, `/portforward`, `/run`) always need `create` — upstream still lets `get` on
//!   `nodes/proxy` open them over WebSocket (a GET), which is the escalation this closes.
//!
//! Served: `/healthz`, `/containerLogs/{ns}/{pod}/{container}` (`logs`),
//! `/exec/{ns}/{pod}/{container}` over WebSocket (`exec`), `/attach/{ns}/{pod}/{container}`
//! (`attach`, the same protocol on the container's own stdio), `/portforward/{ns}/{pod}` over
//! WebSocket-tunnelled SPDY (`portforward`, `spdy`), `/stats/summary` and `/metrics/resource`
//! (`kubelet::stats`). Everything else 404.
//! Errors are `metav1.Status` objects, which the apiserver hands on to its client.

pub mod attach;
pub mod authz;
pub mod exec;
pub mod logs;
pub mod portforward;
pub mod spdy;
pub mod tls;
pub mod websocket;

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http::{Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;
use tokio::sync::watch;

#[derive(Debug, Clone)]
pub struct Config {
    pub node_name: String,
    pub bind_address: IpAddr,
    /// 0 picks a free port (tests); the bound port is what the Node reports.
    pub port: u16,
    /// `DATA_DIR/pki`: `ca.crt`, `kubelet-serving.{crt,key}`.
    pub pki_dir: PathBuf,
    /// Root of the CRI logs.
    pub log_dir: PathBuf,
    /// Pod state directories (`<data dir>/pods/<uid>`, each with its shim's socket).
    pub pods_dir: PathBuf,
    /// cgroup parent of the pods (`kubepods`), read by `/stats/summary` and `/metrics/resource`.
    pub cgroup_root: String,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {addr} for the kubelet API: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

type Body = BoxBody<Bytes, std::io::Error>;

/// Bind the listener (before the Node is registered, so it can report the port).
pub async fn listen(cfg: &Config) -> Result<tokio::net::TcpListener, Error> {
    let addr = SocketAddr::new(cfg.bind_address, cfg.port);
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })
}

struct Server {
    cfg: Config,
    tls: tls::Files,
    authz: authz::Authorizer,
    clients: watch::Receiver<kube::Client>,
    stats: crate::kubelet::stats::Collector,
}

/// Serve until `shutdown` resolves.
pub async fn run(
    cfg: Config,
    listener: tokio::net::TcpListener,
    clients: watch::Receiver<kube::Client>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), Error> {
    let server = Arc::new(Server {
        tls: tls::Files::new(&cfg.pki_dir),
        authz: authz::Authorizer::new(cfg.node_name.clone(), clients.clone()),
        stats: crate::kubelet::stats::Collector::new(
            cfg.node_name.clone(),
            cfg.cgroup_root.clone(),
            clients.clone(),
        ),
        clients,
        cfg,
    });
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "kubelet API: accept failed");
                    // Out of descriptors clears only as connections close.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let server = server.clone();
        tokio::spawn(async move {
            let config = match server.tls.config() {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "kubelet API: no serving certificate yet");
                    return;
                }
            };
            let acceptor = tokio_rustls::TlsAcceptor::from(config);
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(t)) => t,
                    _ => return,
                };
            let who = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(tls::peer);
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let server = server.clone();
                let who = who.clone();
                async move { Ok::<_, Infallible>(server.handle(who, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(30))
                .serve_connection(TokioIo::new(tls), service)
                .with_upgrades();
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "kubelet API connection ended");
            }
        });
    }
}

/// Upstream's `GetRequestAttributes`: the `nodes` subresource a path is checked against.
pub fn attributes(method: &http::Method, path: &str) -> authz::Ask {
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    let subresource = match first {
        "stats" => "stats",
        "metrics" => "metrics",
        "logs" => "log",
        "spec" => "spec",
        "checkpoint" => "checkpoint",
        _ => "proxy",
    };
    let streaming = matches!(first, "exec" | "attach" | "portforward" | "run");
    let verb = match *method {
        _ if streaming => "create",
        http::Method::GET | http::Method::HEAD => "get",
        http::Method::POST => "create",
        http::Method::PUT => "update",
        http::Method::PATCH => "patch",
        http::Method::DELETE => "delete",
        _ => "*",
    };
    authz::Ask { verb, subresource }
}

impl Server {
    async fn handle(&self, who: Option<tls::Peer>, req: Request<Incoming>) -> Response<Body> {
        let Some(who) = who else {
            return status(401, "Unauthorized", "Unauthorized");
        };
        let path = req.uri().path().to_string();
        let ask = attributes(req.method(), &path);
        if let Err(reason) = self.authz.check(&who, &ask).await {
            let mut msg = format!(
                "Forbidden (user={}, verb={}, resource=nodes, subresource(s)=[{}])",
                who.user, ask.verb, ask.subresource
            );
            if !reason.is_empty() {
                msg.push_str(": ");
                msg.push_str(&reason);
            }
            return status(403, "Forbidden", &msg);
        }
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match (req.method().clone(), parts.as_slice()) {
            (http::Method::GET, ["healthz"]) => text(200, "ok"),
            (http::Method::GET, ["stats", "summary"] | ["metrics", "resource"]) => {
                self.stats(parts[0] == "stats").await
            }
            (http::Method::GET, ["containerLogs", ns, pod, container]) => {
                self.container_logs(ns, pod, container, req.uri().query())
                    .await
            }
            (
                http::Method::GET | http::Method::POST,
                [verb @ ("exec" | "attach"), ns, pod, container],
            ) => {
                let attach = *verb == "attach";
                let (ns, pod, container) = (ns.to_string(), pod.to_string(), container.to_string());
                self.exec(attach, &ns, &pod, &container, req).await
            }
            (http::Method::GET | http::Method::POST, ["portforward", ns, pod]) => {
                let (ns, pod) = (ns.to_string(), pod.to_string());
                self.portforward(&ns, &pod, req).await
            }
            _ => status(404, "NotFound", &format!("the path {path} is not served")),
        }
    }

    /// The pod (read from the API), checked to be on this node.
    async fn pod(&self, ns: &str, name: &str) -> Result<Pod, Response<Body>> {
        let client = self.clients.borrow().clone();
        let api: kube::Api<Pod> = kube::Api::namespaced(client, ns);
        let pod = match api.get_opt(name).await {
            Ok(Some(p)) => p,
            Ok(None) => {
                return Err(status(
                    404,
                    "NotFound",
                    &format!("pods \"{name}\" not found"),
                ))
            }
            Err(e) => {
                return Err(status(
                    503,
                    "ServiceUnavailable",
                    &format!("cannot read pod {ns}/{name}: {e}"),
                ))
            }
        };
        if pod.spec.as_ref().and_then(|s| s.node_name.as_deref())
            != Some(self.cfg.node_name.as_str())
        {
            return Err(status(
                404,
                "NotFound",
                &format!("pod {ns}/{name} is not on node {}", self.cfg.node_name),
            ));
        }
        Ok(pod)
    }

    /// `exec`, or with `attach` the container's own stdio: both over remotecommand v5.
    async fn exec(
        &self,
        attach: bool,
        ns: &str,
        name: &str,
        container: &str,
        mut req: Request<Incoming>,
    ) -> Response<Body> {
        let parsed = if attach {
            exec::Options::parse_attach(req.uri().query())
        } else {
            exec::Options::parse(req.uri().query())
        };
        let opts = match parsed {
            Ok(o) => o,
            Err(e) => return status(400, "BadRequest", &e),
        };
        let header = |h: &str| {
            req.headers()
                .get(h)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        let websocket = header("upgrade").eq_ignore_ascii_case("websocket");
        let protocols = header("sec-websocket-protocol");
        let key = header("sec-websocket-key");
        if !websocket || key.is_empty() {
            return status(
                400,
                "BadRequest",
                "unable to upgrade connection: only WebSocket (v5.channel.k8s.io) is served",
            );
        }
        if !protocols.split(',').any(|p| p.trim() == exec::PROTOCOL) {
            return status(
                400,
                "BadRequest",
                &format!("unable to upgrade connection: none of the subprotocols [{protocols}] is supported (want {})", exec::PROTOCOL),
            );
        }
        let pod = match self.pod(ns, name).await {
            Ok(p) => p,
            Err(r) => return r,
        };
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let shim_dir = self.cfg.pods_dir.join(&uid);
        // The newest running attempt of the container (ids are `<name>-<attempt>`).
        let running = crate::kubelet::runtime::client::call(
            &shim_dir,
            &crate::kubelet::runtime::shim::Request::State,
        )
        .await
        .ok()
        .and_then(|r| {
            r.containers
                .into_iter()
                .filter(|c| c.running)
                .filter_map(|c| {
                    let attempt =
                        c.id.strip_prefix(container)?
                            .strip_prefix('-')?
                            .parse::<u32>()
                            .ok()?;
                    Some((attempt, c.id))
                })
                .max()
        });
        let Some((_, id)) = running else {
            return status(
                400,
                "BadRequest",
                &format!("container not found (\"{container}\")"),
            );
        };
        let on_upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            match on_upgrade.await {
                Ok(up) if attach => attach::session(TokioIo::new(up), shim_dir, id, opts).await,
                Ok(up) => exec::session(TokioIo::new(up), shim_dir, id, opts).await,
                Err(e) => tracing::debug!(error = %e, "exec upgrade failed"),
            }
        });
        let mut r = Response::new(full(Bytes::new()));
        *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = r.headers_mut();
        h.insert(
            http::header::UPGRADE,
            http::HeaderValue::from_static("websocket"),
        );
        h.insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("Upgrade"),
        );
        if let Ok(v) = http::HeaderValue::from_str(&websocket::accept_key(&key)) {
            h.insert("sec-websocket-accept", v);
        }
        h.insert(
            "sec-websocket-protocol",
            http::HeaderValue::from_static(exec::PROTOCOL),
        );
        r
    }

    /// `kubectl port-forward`: the WebSocket tunnel of SPDY (see `portforward`).
    async fn portforward(
        &self,
        ns: &str,
        name: &str,
        mut req: Request<Incoming>,
    ) -> Response<Body> {
        let header = |h: &str| {
            req.headers()
                .get(h)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        let websocket = header("upgrade").eq_ignore_ascii_case("websocket");
        let protocols = header("sec-websocket-protocol");
        let key = header("sec-websocket-key");
        if !websocket || key.is_empty() {
            return status(
                400,
                "BadRequest",
                &format!(
                    "unable to upgrade connection: only WebSocket ({}) is served",
                    portforward::PROTOCOL
                ),
            );
        }
        if !protocols
            .split(',')
            .any(|p| p.trim() == portforward::PROTOCOL)
        {
            return status(
                400,
                "BadRequest",
                &format!("unable to upgrade connection: none of the subprotocols [{protocols}] is supported (want {})", portforward::PROTOCOL),
            );
        }
        let pod = match self.pod(ns, name).await {
            Ok(p) => p,
            Err(r) => return r,
        };
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let shim_dir = self.cfg.pods_dir.join(&uid);
        let shim_pid = crate::kubelet::runtime::client::call(
            &shim_dir,
            &crate::kubelet::runtime::shim::Request::State,
        )
        .await
        .map(|r| r.shim_pid)
        .unwrap_or(0);
        if shim_pid <= 0 {
            return status(
                400,
                "BadRequest",
                &format!("unable to do port forwarding: pod {ns}/{name} is not running"),
            );
        }
        let on_upgrade = hyper::upgrade::on(&mut req);
        let desc = format!("{ns}/{name}");
        tokio::spawn(async move {
            match on_upgrade.await {
                Ok(up) => {
                    portforward::session(
                        TokioIo::new(up),
                        crate::kubelet::runtime::netns::NetNs::Pid(shim_pid),
                        desc,
                        uid,
                    )
                    .await
                }
                Err(e) => tracing::debug!(error = %e, "port-forward upgrade failed"),
            }
        });
        let mut r = Response::new(full(Bytes::new()));
        *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = r.headers_mut();
        h.insert(
            http::header::UPGRADE,
            http::HeaderValue::from_static("websocket"),
        );
        h.insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("Upgrade"),
        );
        if let Ok(v) = http::HeaderValue::from_str(&websocket::accept_key(&key)) {
            h.insert("sec-websocket-accept", v);
        }
        h.insert(
            "sec-websocket-protocol",
            http::HeaderValue::from_static(portforward::PROTOCOL),
        );
        r
    }

    async fn container_logs(
        &self,
        ns: &str,
        name: &str,
        container: &str,
        query: Option<&str>,
    ) -> Response<Body> {
        let opts = match logs::Options::parse(query) {
            Ok(o) => o,
            Err(e) => return status(400, "BadRequest", &e),
        };
        let client = self.clients.borrow().clone();
        let api: kube::Api<Pod> = kube::Api::namespaced(client, ns);
        let pod = match api.get_opt(name).await {
            Ok(Some(p)) => p,
            Ok(None) => return status(404, "NotFound", &format!("pods \"{name}\" not found")),
            Err(e) => {
                return status(
                    503,
                    "ServiceUnavailable",
                    &format!("cannot read pod {ns}/{name}: {e}"),
                )
            }
        };
        let spec = pod.spec.clone().unwrap_or_default();
        if spec.node_name.as_deref() != Some(self.cfg.node_name.as_str()) {
            return status(
                404,
                "NotFound",
                &format!("pod {ns}/{name} is not on node {}", self.cfg.node_name),
            );
        }
        let known = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .any(|c| c.name == container);
        if !known {
            return status(
                400,
                "BadRequest",
                &format!("container {container} is not valid for pod {name}"),
            );
        }
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let target = logs::Target {
            dir: self
                .cfg
                .log_dir
                .join(format!("{ns}_{name}_{uid}"))
                .join(container),
            shim_dir: self.cfg.pods_dir.join(&uid),
            container: container.to_string(),
        };
        let attempts = logs::attempts(&target.dir);
        let attempt = if opts.previous {
            match attempts.len() {
                n if n >= 2 => attempts[n - 2],
                _ => {
                    return status(
                        400,
                        "BadRequest",
                        &format!(
                        "previous terminated container \"{container}\" in pod \"{name}\" not found"
                    ),
                    )
                }
            }
        } else {
            match attempts.last() {
                Some(a) => *a,
                None => {
                    return status(
                        400,
                        "BadRequest",
                        &format!("container \"{container}\" in pod \"{name}\" is waiting to start: ContainerCreating"),
                    )
                }
            }
        };
        let rx = logs::stream(target, attempt, opts);
        let body = StreamBody::new(
            tokio_stream::wrappers::ReceiverStream::new(rx)
                .map(|b| Ok::<_, std::io::Error>(Frame::data(b))),
        );
        let mut resp = Response::new(BodyExt::boxed(body));
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain"),
        );
        resp
    }
}

impl Server {
    /// `/stats/summary` (JSON) or `/metrics/resource` (Prometheus text), see `kubelet::stats`.
    async fn stats(&self, summary: bool) -> Response<Body> {
        use crate::kubelet::stats;
        let snap = match self.stats.snapshot().await {
            Ok(s) => s,
            Err(e) => return status(503, "ServiceUnavailable", &e.to_string()),
        };
        let (body, content_type) = if summary {
            let v = stats::summary::render(&snap, stats::summary::memory_capacity());
            (
                serde_json::to_vec(&v).unwrap_or_default(),
                "application/json",
            )
        } else {
            (
                stats::resource::render(&snap).into_bytes(),
                stats::resource::CONTENT_TYPE,
            )
        };
        let mut r = Response::new(full(body));
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(content_type),
        );
        r
    }
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

fn text(code: u16, body: &'static str) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
    r
}

/// A `metav1.Status` error response.
pub fn status(code: u16, reason: &str, message: &str) -> Response<Body> {
    let body = serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    });
    let mut r = Response::new(full(serde_json::to_vec(&body).unwrap_or_default()));
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

#[cfg(test)]
mod tests {
    #[test]
    fn attributes_as_upstream_but_streams_need_create() {
        use http::Method;
        let a = super::attributes(&Method::GET, "/containerLogs/ns/p/c");
        assert_eq!((a.verb, a.subresource), ("get", "proxy"));
        let a = super::attributes(&Method::GET, "/stats/summary");
        assert_eq!((a.verb, a.subresource), ("get", "stats"));
        let a = super::attributes(&Method::GET, "/metrics/resource");
        assert_eq!((a.verb, a.subresource), ("get", "metrics"));
        let a = super::attributes(&Method::GET, "/exec/ns/p/c");
        assert_eq!((a.verb, a.subresource), ("create", "proxy"));
        let a = super::attributes(&Method::POST, "/portforward/ns/p");
        assert_eq!((a.verb, a.subresource), ("create", "proxy"));
    }
}
