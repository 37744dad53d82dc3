//! HTTP GET for probes and lifecycle hooks, as upstream's `probe/http`: HTTP/1.1 over a
//! connection dialled inside the pod's network namespace, `User-Agent: kube-probe/<major.minor>`
//! and `Accept: */*` unless the probe sets them, the probe's own headers, and a status in
//! 200–399 counting as success (upstream follows redirects only to the same host and calls a
//! redirect elsewhere a success with a warning: not following it is the same verdict).
//!
//! Only the status line is read, and at most 10 KiB of the body for the failure message
//! (upstream reads 10 KiB too); the whole exchange is bounded by the timeout.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::Target;

/// What an HTTP GET asks for.
#[derive(Debug, Clone)]
pub struct Get {
    pub host: String,
    pub addr: SocketAddr,
    pub path: String,
    pub headers: Vec<(String, String)>,
}

const MAX_BODY: usize = 10 * 1024;

impl Get {
    fn url(&self) -> String {
        format!(
            "http://{}{}",
            host_port(&self.host, self.addr.port()),
            self.path
        )
    }
}

fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The request bytes. Header values come from the pod spec: CR/LF are refused, not sent.
fn request(g: &Get) -> Result<Vec<u8>, String> {
    let clean = |s: &str| !s.contains(['\r', '\n']);
    if !clean(&g.path) || g.headers.iter().any(|(k, v)| !clean(k) || !clean(v)) {
        return Err("invalid characters in the probe's path or headers".into());
    }
    let path = if g.path.starts_with('/') {
        g.path.clone()
    } else {
        format!("/{}", g.path)
    };
    let has = |name: &str| g.headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
    let mut r = format!("GET {path} HTTP/1.1\r\n");
    if !has("host") {
        r.push_str(&format!("Host: {}\r\n", host_port(&g.host, g.addr.port())));
    }
    if !has("user-agent") {
        r.push_str(&format!(
            "User-Agent: kube-probe/{}\r\n",
            crate::api::version::MAJOR_MINOR
        ));
    }
    if !has("accept") {
        r.push_str("Accept: */*\r\n");
    }
    for (k, v) in &g.headers {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    r.push_str("Connection: close\r\n\r\n");
    Ok(r.into_bytes())
}

/// Performs the GET; `Ok(status)` for any HTTP answer, `Err(message)` as upstream words
/// transport failures.
pub async fn get(target: &Target, g: &Get, timeout: Duration) -> Result<(u16, String), String> {
    let url = g.url();
    let work = async {
        let mut s = super::dial(target, g.addr, timeout)
            .await
            .map_err(|e| format!("Get {url:?}: dial tcp {}: {}", g.addr, super::os_error(&e)))?;
        s.write_all(&request(g)?)
            .await
            .map_err(|e| format!("Get {url:?}: {e}"))?;
        let mut buf = Vec::with_capacity(1024);
        let mut chunk = [0u8; 2048];
        // Read until the head is complete, then up to MAX_BODY of the body.
        loop {
            let n = s
                .read(&mut chunk)
                .await
                .map_err(|e| format!("Get {url:?}: {e}"))?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(end) = find(&buf, b"\r\n\r\n") {
                if buf.len() - (end + 4) >= MAX_BODY {
                    break;
                }
            }
        }
        parse(&buf).ok_or_else(|| format!("Get {url:?}: malformed HTTP response"))
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "Get {url:?}: context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
        )),
    }
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

/// Status code and (truncated) body of a response.
fn parse(buf: &[u8]) -> Option<(u16, String)> {
    let line_end = find(buf, b"\r\n")?;
    let line = std::str::from_utf8(&buf[..line_end]).ok()?;
    let mut parts = line.split(' ');
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let code: u16 = parts.next()?.parse().ok()?;
    let body = find(buf, b"\r\n\r\n")
        .map(|e| &buf[e + 4..])
        .unwrap_or_default();
    let body = String::from_utf8_lossy(&body[..body.len().min(MAX_BODY)]).into_owned();
    Some((code, body))
}

/// Upstream's verdict on a status: 200–399 succeed.
pub fn verdict(code: u16, body: &str) -> Result<String, String> {
    if (200..400).contains(&code) {
        Ok(String::new())
    } else {
        let _ = body;
        Err(format!("HTTP probe failed with statuscode: {code}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_has_upstream_headers_and_refuses_injection() {
        let g = Get {
            host: "10.42.0.5".into(),
            addr: "10.42.0.5:8080".parse().unwrap(),
            path: "healthz".into(),
            headers: vec![("X-Probe".into(), "yes".into())],
        };
        let r = String::from_utf8(request(&g).unwrap()).unwrap();
        assert!(
            r.starts_with("GET /healthz HTTP/1.1\r\nHost: 10.42.0.5:8080\r\n"),
            "{r}"
        );
        assert!(r.contains("User-Agent: kube-probe/"), "{r}");
        assert!(r.contains("X-Probe: yes\r\n"), "{r}");
        let bad = Get {
            headers: vec![("X".into(), "a\r\nEvil: 1".into())],
            ..g
        };
        assert!(request(&bad).is_err());
    }

    #[test]
    fn parse_and_verdict() {
        assert_eq!(
            parse(b"HTTP/1.1 204 No Content\r\n\r\n"),
            Some((204, String::new()))
        );
        assert_eq!(
            parse(b"HTTP/1.0 500 x\r\nA: b\r\n\r\nboom").unwrap().1,
            "boom"
        );
        assert_eq!(parse(b"SSH-2.0\r\n"), None);
        assert!(verdict(302, "").is_ok());
        assert!(verdict(399, "").is_ok());
        assert_eq!(
            verdict(500, "").unwrap_err(),
            "HTTP probe failed with statuscode: 500"
        );
        assert!(verdict(199, "").is_err());
    }
}
