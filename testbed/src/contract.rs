//! A sidecar's answers checked against the HTTP contract (`aurora_api`):
//! the version header, and the body read as the contract type and written
//! back the same, so a field the server sends that clients would drop is
//! named. One round trip per endpoint, against the real server.

use hyper::StatusCode;
use sidecar_kit::http_client::{HttpClient, HttpResponse};

/// `r` as the contract type `T`, whole; panics naming `what` and what the
/// contract misses.
pub fn read<T>(r: &HttpResponse, what: &str) -> T
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    let header = r
        .headers
        .get(aurora_api::API_HEADER)
        .and_then(|v| v.to_str().ok());
    match aurora_api::conforms(header, &r.body) {
        Ok(t) => t,
        Err(e) => panic!("{what}: {e}"),
    }
}

/// `GET url` as the contract type `T`, whole, with the answer's status;
/// panics when there is no answer or it is not `T`.
pub async fn get<T>(http: &HttpClient, url: &str) -> (StatusCode, T)
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    match http.get(url).await {
        Ok(r) => (r.status, read(&r, &format!("GET {url}"))),
        Err(e) => panic!("GET {url}: {e}"),
    }
}
