//! gRPC probes (`grpc.health.v1.Health/Check` over HTTP/2 cleartext), as upstream's
//! `probe/grpc`: the request names `service` (empty by default), `SERVING` is success, any
//! other status or a failed call is a failure worded as upstream words it. The two tiny
//! protobuf messages are encoded by hand (one string field out, one enum field back).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;

use super::Target;

/// `HealthCheckRequest { string service = 1; }` in a gRPC length-prefixed frame.
fn request_frame(service: &str) -> Vec<u8> {
    let mut msg = Vec::new();
    if !service.is_empty() {
        msg.push(0x0a);
        varint(&mut msg, service.len() as u64);
        msg.extend_from_slice(service.as_bytes());
    }
    let mut f = vec![0u8];
    f.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    f.extend_from_slice(&msg);
    f
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn read_varint(b: &[u8], i: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*i)?;
        *i += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// `HealthCheckResponse.status` from a gRPC frame (0, UNKNOWN, when absent).
fn response_status(frame: &[u8]) -> Option<u64> {
    if frame.len() < 5 || frame[0] != 0 {
        return None; // compressed or truncated: we asked for neither
    }
    let len = u32::from_be_bytes([frame[1], frame[2], frame[3], frame[4]]) as usize;
    let msg = frame.get(5..5 + len)?;
    let mut i = 0;
    let mut status = 0;
    while i < msg.len() {
        let key = read_varint(msg, &mut i)?;
        match key & 7 {
            0 => {
                let v = read_varint(msg, &mut i)?;
                if key >> 3 == 1 {
                    status = v;
                }
            }
            2 => {
                let l = read_varint(msg, &mut i)? as usize;
                i = i.checked_add(l).filter(|e| *e <= msg.len())?;
            }
            1 => i += 8,
            5 => i += 4,
            _ => return None,
        }
    }
    Some(status)
}

fn status_name(s: u64) -> String {
    match s {
        0 => "UNKNOWN".into(),
        1 => "SERVING".into(),
        2 => "NOT_SERVING".into(),
        3 => "SERVICE_UNKNOWN".into(),
        n => n.to_string(),
    }
}

/// Runs one health check; `Ok` when the service answers `SERVING`.
pub async fn check(
    target: &Target,
    addr: SocketAddr,
    service: &str,
    timeout: Duration,
) -> Result<(), String> {
    let Ok(stream) = super::dial(target, addr, timeout).await else {
        return Err(format!(
            "timeout: failed to connect service {:?} within {}s",
            addr.to_string(),
            timeout.as_secs()
        ));
    };
    let call = async {
        let (client, conn) = h2::client::handshake(stream)
            .await
            .map_err(|e| format!("error: health rpc probe failed: {e}"))?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        let r = rpc(client, addr, service).await;
        driver.abort();
        r
    };
    match tokio::time::timeout(timeout, call).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "timeout: health rpc did not complete within {}s",
            timeout.as_secs()
        )),
    }
}

async fn rpc(
    client: h2::client::SendRequest<Bytes>,
    addr: SocketAddr,
    service: &str,
) -> Result<(), String> {
    let failed = |e: &dyn std::fmt::Display| format!("error: health rpc probe failed: {e}");
    let mut client = client.ready().await.map_err(|e| failed(&e))?;
    let req = http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}/grpc.health.v1.Health/Check"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header(
            "user-agent",
            format!("kube-probe/{}", crate::api::version::MAJOR_MINOR),
        )
        .body(())
        .map_err(|e| failed(&e))?;
    let (resp, mut send) = client.send_request(req, false).map_err(|e| failed(&e))?;
    send.send_data(Bytes::from(request_frame(service)), true)
        .map_err(|e| failed(&e))?;
    let resp = resp.await.map_err(|e| failed(&e))?;
    let (parts, mut body) = resp.into_parts();
    let mut data = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(|e| failed(&e))?;
        let _ = body.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
        if data.len() > 64 * 1024 {
            return Err(failed(&"response too large"));
        }
    }
    let trailers = body.trailers().await.map_err(|e| failed(&e))?;
    // A trailers-only answer carries grpc-status in the headers.
    let grpc_status = trailers
        .as_ref()
        .and_then(|t| t.get("grpc-status"))
        .or_else(|| parts.headers.get("grpc-status"))
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if grpc_status == "12" {
        return Err(
            "this server does not implement the grpc health protocol (grpc.health.v1.Health)"
                .into(),
        );
    }
    if grpc_status != "0" {
        let msg = trailers
            .as_ref()
            .and_then(|t| t.get("grpc-message"))
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        return Err(failed(&format!(
            "rpc error: code = {grpc_status} desc = {msg}"
        )));
    }
    match response_status(&data) {
        Some(1) => Ok(()),
        Some(s) => Err(format!(
            "service unhealthy (responded with {:?})",
            status_name(s)
        )),
        None => Err(failed(&"malformed HealthCheckResponse")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        assert_eq!(request_frame(""), vec![0, 0, 0, 0, 0]);
        assert_eq!(request_frame("a"), vec![0, 0, 0, 0, 3, 0x0a, 1, b'a']);
        assert_eq!(response_status(&[0, 0, 0, 0, 2, 0x08, 1]), Some(1));
        assert_eq!(response_status(&[0, 0, 0, 0, 2, 0x08, 2]), Some(2));
        assert_eq!(response_status(&[0, 0, 0, 0, 0]), Some(0));
        // Hostile: truncated, compressed, lying lengths.
        assert_eq!(response_status(&[0, 0, 0, 0, 9, 0x08]), None);
        assert_eq!(response_status(&[1, 0, 0, 0, 2, 0x08, 1]), None);
        assert_eq!(response_status(&[0, 0, 0, 0, 3, 0x12, 0xff, 1]), None);
        assert_eq!(response_status(&[0, 0, 0]), None);
    }
}
