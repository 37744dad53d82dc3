//! Request bodies in, responses out: a size limit (413 past 3 MiB, as upstream), JSON or YAML
//! decoding with a 415 for other media types, and JSON responses. Protobuf is never produced;
//! clients that offer it also accept JSON.
//!
//! Decoding is linear in the body: JSON through serde_json (which stops at 128 levels), YAML
//! through `yaml` (flow nesting bounded before libyaml sees it, alias expansion bounded while
//! the value is built). Big bodies are decoded off the async workers ([`decode_offloaded`]).

use bytes::Bytes;
use http::{header, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use serde_json::Value;

use crate::apiserver::status::{ApiError, ApiResult};

pub type Body = BoxBody<Bytes, std::io::Error>;

/// Largest request body accepted, as upstream's `MaxRequestBodyBytes`.
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// Deepest nesting accepted in a decoded body; hostile documents must not exhaust the stack.
const MAX_DEPTH: usize = crate::apiserver::merge::MAX_DEPTH;

/// Bodies up to this size are decoded inline: offloading costs more than decoding them.
pub const INLINE_DECODE_BYTES: usize = 64 * 1024;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A JSON response, ended with a newline as Go's `json.Encoder` (upstream's serializer) does.
pub fn json_response(code: u16, value: &Value) -> Response<Body> {
    let mut bytes = serde_json::to_vec(value).unwrap_or_default();
    bytes.push(b'\n');
    bytes_response(code, bytes)
}

pub fn text_response(code: u16, text: impl Into<String>) -> Response<Body> {
    let mut resp = Response::new(full(text.into()));
    *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

pub fn error_response(e: &ApiError) -> Response<Body> {
    bytes_response(e.code, e.to_bytes())
}

/// A JSON response from bytes already encoded.
pub fn bytes_response(code: u16, bytes: Vec<u8>) -> Response<Body> {
    let mut resp = Response::new(full(bytes));
    *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    resp
}

/// How much of an oversized body is read and discarded before answering 413, so the answer is
/// not lost to a TCP reset (closing a socket with unread data resets it), as Go's net/http does.
const DRAIN_LIMIT: usize = 8 * 1024 * 1024;

async fn drain(mut body: hyper::body::Incoming, mut budget: usize) {
    let step = async {
        while let Some(Ok(frame)) = body.frame().await {
            let n = frame.data_ref().map_or(0, |d| d.len());
            if n >= budget {
                return;
            }
            budget -= n;
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), step).await;
}

/// Read the whole body, refusing more than [`MAX_BODY`].
pub async fn read(body: hyper::body::Incoming, content_length: Option<u64>) -> ApiResult<Bytes> {
    let too_large = || ApiError::too_large("the request body is larger than 3145728 bytes");
    if content_length.is_some_and(|n| n > MAX_BODY as u64) {
        drain(body, DRAIN_LIMIT).await;
        return Err(too_large());
    }
    let mut body = body;
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame
            .map_err(|e| ApiError::bad_request(format!("cannot read the request body: {e}")))?;
        if let Some(data) = frame.data_ref() {
            if buf.len() + data.len() > MAX_BODY {
                drain(body, DRAIN_LIMIT).await;
                return Err(too_large());
            }
            buf.extend_from_slice(data);
        }
    }
    Ok(buf.freeze())
}

/// The media type without parameters, lower-cased.
pub fn media_type(content_type: Option<&str>) -> String {
    content_type
        .unwrap_or("application/json")
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// [`decode`], run off the async workers when the body is big (see `offload`).
pub async fn decode_offloaded(media: &str, bytes: &bytes::Bytes) -> ApiResult<Value> {
    if bytes.len() <= INLINE_DECODE_BYTES {
        return decode(media, bytes);
    }
    let (media, bytes) = (media.to_string(), bytes.clone());
    super::offload::run(move || decode(&media, &bytes)).await?
}

/// Decode a JSON or YAML document (one object).
pub fn decode(media: &str, bytes: &[u8]) -> ApiResult<Value> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("the request body is empty"));
    }
    let value: Value = match media {
        "application/json"
        | "application/json-patch+json"
        | "application/merge-patch+json"
        | "application/strategic-merge-patch+json"
        | "" => serde_json::from_slice(bytes).map_err(|e| {
            ApiError::bad_request(format!("the request body is not valid JSON: {e}"))
        })?,
        "application/yaml" | "application/apply-patch+yaml" | "text/yaml" => {
            // JSON is YAML; try the strict parser first for precise errors.
            match serde_json::from_slice(bytes) {
                Ok(v) => v,
                Err(_) => {
                    super::yaml::decode(bytes).map_err(|e| ApiError::bad_request(e.to_string()))?
                }
            }
        }
        other => return Err(ApiError::unsupported_media_type(other)),
    };
    if crate::apiserver::merge::too_deep(&value, MAX_DEPTH) {
        return Err(ApiError::bad_request(format!(
            "the request body is nested deeper than {MAX_DEPTH} levels"
        )));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding() {
        assert!(decode("application/json", br#"{"a":1}"#).is_ok());
        assert_eq!(decode("application/json", b"{").unwrap_err().code, 400);
        assert_eq!(
            decode("application/yaml", b"a: 1\nb: [x]").unwrap()["b"][0],
            "x"
        );
        assert_eq!(decode("text/html", b"<html>").unwrap_err().code, 415);
        assert_eq!(decode("application/json", b"  ").unwrap_err().code, 400);
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert_eq!(
            decode("application/json", deep.as_bytes())
                .unwrap_err()
                .code,
            400
        );
    }
}
