//! `/v1/keys`: one key's raw bytes (GET, PUT, DELETE) and scans, each
//! request one `proto::Request`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response as HttpResponse};
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::Serialize;

use super::text::{Query, decode, encode_key, etag, if_match_version};
use super::{ApiError, HttpApi, header_text, json, unexpected};
use crate::proto::{Durability, ErrorCode, ErrorReply, Request, Response};
use crate::types::{AckPolicy, Condition, Seq};

/// The request header that sets a TTL (as `?ttl_ms=` does), and the reply
/// header that reports the TTL left.
pub const TTL_HEADER: &str = "x-strata-ttl-ms";
/// The request header that names an ack policy (as `?ack=` does).
pub const ACK_HEADER: &str = "x-strata-ack";

const KEYS_PREFIX: &str = "/v1/keys/";

/// The key named by the path, percent-decoded (binary-safe; `+` is a `+`).
fn path_key(uri: &Uri) -> Result<Bytes, ApiError> {
    let raw = uri.path().strip_prefix(KEYS_PREFIX).unwrap_or_default();
    let key = decode(raw, "the key", false).map_err(|e| ApiError::bad_request(e.to_string()))?;
    if key.is_empty() {
        return Err(ApiError::bad_request("the key is empty"));
    }
    Ok(key)
}

/// The query, refusing parameters this endpoint does not take (a typo
/// must not silently drop a TTL or a condition).
fn query(uri: &Uri, allowed: &[&str]) -> Result<Query, ApiError> {
    let q = Query::parse(uri.query()).map_err(|e| ApiError::bad_request(e.to_string()))?;
    if let Some(name) = q.names().find(|n| !allowed.contains(n)) {
        return Err(ApiError::bad_request(format!(
            "unknown query parameter {name:?}; this endpoint takes {allowed:?}"
        )));
    }
    Ok(q)
}

/// A setting given as a query parameter or a header (not both).
fn param<T>(
    q: &Query,
    name: &str,
    headers: &HeaderMap,
    header: &'static str,
) -> Result<Option<T>, ApiError>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    let from_query = q.parsed::<T>(name).map_err(ApiError::bad_request)?;
    let from_header = header_text(headers, header)?
        .map(|t| {
            t.trim()
                .parse::<T>()
                .map_err(|e| ApiError::bad_request(format!("header {header}: {e}")))
        })
        .transpose()?;
    match (from_query, from_header) {
        (Some(_), Some(_)) => Err(ApiError::bad_request(format!(
            "give either ?{name}= or the {header} header, not both"
        ))),
        (q, h) => Ok(q.or(h)),
    }
}

fn ack(q: &Query, headers: &HeaderMap) -> Result<Option<AckPolicy>, ApiError> {
    param::<AckPolicy>(q, "ack", headers, ACK_HEADER)
}

/// A write's condition from `?if=`, `If-None-Match: *` and `If-Match`;
/// at most one of them.
fn condition(q: &Query, headers: &HeaderMap) -> Result<Condition, ApiError> {
    let mut found = Vec::new();
    match q.text("if").map_err(ApiError::bad_request)? {
        None => {}
        Some("absent") => found.push(Condition::IfAbsent),
        Some("present") => found.push(Condition::IfPresent),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "if={other:?}: expected absent or present"
            )));
        }
    }
    match header_text(headers, "if-none-match")?.map(str::trim) {
        None => {}
        Some("*") => found.push(Condition::IfAbsent),
        Some(_) => {
            return Err(ApiError::bad_request(
                "a write takes only `If-None-Match: *` (only if absent)",
            ));
        }
    }
    if let Some(value) = header_text(headers, "if-match")? {
        match if_match_version(value, "If-Match")
            .map_err(|e| ApiError::bad_request(e.to_string()))?
        {
            Some(v) => found.push(Condition::IfVersion(Seq(v))),
            None => found.push(Condition::IfPresent),
        }
    }
    match found[..] {
        [] => Ok(Condition::Always),
        [one] => Ok(one),
        _ => Err(ApiError::bad_request("give at most one condition")),
    }
}

fn etag_header(version: Seq) -> HeaderValue {
    // Digits between quotes: always a valid header value.
    HeaderValue::from_str(&etag(version.0)).unwrap_or(HeaderValue::from_static("\"\""))
}

/// `GET /v1/keys/{key}`: the value's bytes, its version as `ETag`, its TTL
/// left in `x-strata-ttl-ms`; `304` when `If-None-Match` names the version.
pub async fn get(State(api): State<Arc<HttpApi>>, uri: Uri, headers: HeaderMap) -> HttpResponse {
    async {
        let key = path_key(&uri)?;
        query(&uri, &[])?;
        let cached = header_text(&headers, "if-none-match")?
            .map(|v| if_match_version(v, "If-None-Match"))
            .transpose()
            .map_err(|e| ApiError::bad_request(e.to_string()))?
            .flatten();
        let entry = match api.call(&headers, Request::Get { key }).await? {
            Response::Value(Some(entry)) => entry,
            Response::Value(None) => return Err(ApiError::not_found("no such key")),
            other => return Err(unexpected(&other)),
        };
        let tag = etag_header(entry.version);
        if cached == Some(entry.version.0) {
            return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, tag)]).into_response());
        }
        let mut response = (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                ),
                (header::ETAG, tag),
            ],
            entry.value,
        )
            .into_response();
        if let Some(ms) = entry.ttl_ms {
            response
                .headers_mut()
                .insert(TTL_HEADER, HeaderValue::from(ms));
        }
        Ok(response)
    }
    .await
    .unwrap_or_else(IntoResponse::into_response)
}

/// A write's reply body.
#[derive(Serialize)]
struct Written {
    version: u64,
    durability: DurabilityJson,
}

/// [`Durability`] with the policy in its text form (`semi-sync:1:500`).
#[derive(Serialize)]
struct DurabilityJson {
    local_synced: bool,
    replicas_acked: u32,
    requested: String,
    degraded: bool,
}

impl From<Durability> for DurabilityJson {
    fn from(d: Durability) -> DurabilityJson {
        DurabilityJson {
            local_synced: d.local_synced,
            replicas_acked: d.replicas_acked,
            requested: d.requested.to_string(),
            degraded: d.degraded,
        }
    }
}

/// The request body, at most `max` bytes: `413` as soon as it is known to
/// be longer (from `Content-Length`, or while reading), `408` when it does
/// not arrive within the request timeout.
async fn read_body(api: &HttpApi, headers: &HeaderMap, body: Body) -> Result<Bytes, ApiError> {
    let max = api.node.limits.max_value_bytes as usize;
    let too_large = || {
        ApiError::from(ErrorReply::new(
            ErrorCode::ValueTooLarge,
            format!("the value is longer than this node's max_value_bytes ({max})"),
        ))
    };
    let declared = header_text(headers, "content-length")?.and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max as u64) {
        return Err(too_large());
    }
    match tokio::time::timeout(api.request_timeout, Limited::new(body, max).collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Ok(Err(e)) => Err(ApiError::bad_request(format!("reading the body: {e}"))),
        Err(_) => {
            let mut e = ApiError::from(ErrorReply::new(
                ErrorCode::Timeout,
                "the body did not arrive within the request timeout",
            ));
            e.status = StatusCode::REQUEST_TIMEOUT;
            Err(e)
        }
    }
}

/// `PUT /v1/keys/{key}`: stores the body. `201` when the key was created
/// (`If-None-Match: *`), `200` otherwise; `412` when the condition fails.
pub async fn put(
    State(api): State<Arc<HttpApi>>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> HttpResponse {
    async {
        let key = path_key(&uri)?;
        let q = query(&uri, &["ttl_ms", "ack", "if"])?;
        let ttl_ms = param::<u64>(&q, "ttl_ms", &headers, TTL_HEADER)?;
        let condition = condition(&q, &headers)?;
        let ack = ack(&q, &headers)?;
        // The role is checked before a body is read (and again with it).
        let role = api.role(&headers)?;
        crate::cmd::check_role(&api.node, role, crate::config::Role::ReadWrite, "set")?;
        let value = read_body(&api, &headers, body).await?;
        let request = Request::Set {
            key,
            value,
            ttl_ms,
            condition,
            ack,
        };
        match api.call(&headers, request).await? {
            Response::Written(w) => {
                let status = match condition {
                    Condition::IfAbsent => StatusCode::CREATED,
                    _ => StatusCode::OK,
                };
                let body = json(&Written {
                    version: w.version.0,
                    durability: w.durability.into(),
                });
                Ok((status, [(header::ETAG, etag_header(w.version))], body).into_response())
            }
            Response::NotWritten { current_version } => Err(not_written(current_version)),
            other => Err(unexpected(&other)),
        }
    }
    .await
    .unwrap_or_else(IntoResponse::into_response)
}

fn not_written(current: Option<Seq>) -> ApiError {
    ApiError::condition_failed(current.map(|v| v.0))
}

/// `DELETE /v1/keys/{key}`: `204`, `404` when absent, `412` when
/// `If-Match` names another version.
pub async fn delete(State(api): State<Arc<HttpApi>>, uri: Uri, headers: HeaderMap) -> HttpResponse {
    async {
        let key = path_key(&uri)?;
        let q = query(&uri, &["ack"])?;
        let condition = match header_text(&headers, "if-match")? {
            None => Condition::Always,
            Some(value) => match if_match_version(value, "If-Match")
                .map_err(|e| ApiError::bad_request(e.to_string()))?
            {
                Some(v) => Condition::IfVersion(Seq(v)),
                // "If it exists": a delete of an absent key is a 404 anyway.
                None => Condition::Always,
            },
        };
        let request = Request::Delete {
            key,
            condition,
            ack: ack(&q, &headers)?,
        };
        match api.call(&headers, request).await? {
            Response::Deleted { existed: true, .. } => Ok(StatusCode::NO_CONTENT.into_response()),
            Response::Deleted { existed: false, .. } => Err(ApiError::not_found("no such key")),
            Response::NotWritten { current_version } => Err(not_written(current_version)),
            other => Err(unexpected(&other)),
        }
    }
    .await
    .unwrap_or_else(IntoResponse::into_response)
}

/// One key of a scan page.
#[derive(Serialize)]
struct ScanKey {
    /// Percent-encoded: ready for `/v1/keys/{key}`.
    key: String,
    version: u64,
    ttl_ms: Option<u64>,
    size: usize,
}

#[derive(Serialize)]
struct ScanReply {
    keys: Vec<ScanKey>,
    next_cursor: Option<String>,
}

/// `GET /v1/keys?prefix=&cursor=&limit=`: one page of keys (no values).
pub async fn scan(State(api): State<Arc<HttpApi>>, uri: Uri, headers: HeaderMap) -> HttpResponse {
    async {
        let q = query(&uri, &["prefix", "cursor", "limit"])?;
        let request = Request::Scan {
            prefix: q.bytes("prefix").cloned().unwrap_or_default(),
            cursor: q.bytes("cursor").cloned(),
            limit: q
                .parsed::<u32>("limit")
                .map_err(ApiError::bad_request)?
                .unwrap_or(0),
        };
        let page = match api.call(&headers, request).await? {
            Response::Page(page) => page,
            other => return Err(unexpected(&other)),
        };
        let keys = page
            .entries
            .into_iter()
            .map(|(key, e)| ScanKey {
                key: encode_key(&key),
                version: e.version.0,
                ttl_ms: e.ttl_ms,
                size: e.value.len(),
            })
            .collect();
        Ok(json(&ScanReply {
            keys,
            next_cursor: page.next_cursor.map(|c| encode_key(&c)),
        }))
    }
    .await
    .unwrap_or_else(IntoResponse::into_response)
}
