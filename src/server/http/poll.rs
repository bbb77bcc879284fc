//! SSF poll delivery (RFC 8936): revocd asks a transmitter for its
//! pending SETs, applies each as a pushed one ([`super::ssf`]), and says
//! what became of them in its next request.
//!
//! Each request is `POST <poll URL>` with `{"ack": [...], "setErrs":
//! {...}, "maxEvents": 100, "returnImmediately": true}` and the bearer
//! token of the transmitter's poll token file; the answer's `sets` (jti → SET) are
//! applied in turn. A SET applied is acknowledged; one refused is reported
//! in `setErrs` with its RFC 8935 code (both end its delivery); one whose
//! cut-off the store could not confirm is neither, so the transmitter
//! sends it again, and polling backs off. When the transmitter has no more
//! (`moreAvailable` false, nothing returned), the next poll comes after
//! `--ssf-poll-interval`; a failed poll (unreachable, not 200, not JSON)
//! backs off from one second to a minute.

use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use serde_json::{json, Map, Value};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::ssf::{apply, Failure};
use crate::backoff::ExponentialBackoff;
use crate::server::handlers::RevocationApi;

/// SETs asked for per poll.
const MAX_EVENTS: usize = 100;
/// Largest answer read from a transmitter.
const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;
/// Longest one poll may take, connecting included.
const POLL_TIMEOUT: Duration = Duration::from_secs(30);
/// Back-off after a failed poll.
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// Where and how to poll a transmitter.
#[derive(Clone)]
pub struct Poll {
    /// The transmitter's poll endpoint (`http` or `https`).
    pub url: Uri,
    /// Bearer token the transmitter expects, if any; never logged.
    pub token: Option<String>,
    /// Pause between polls when nothing is pending.
    pub interval: Duration,
    /// TLS towards an `https` endpoint (the system's roots).
    pub tls: TlsConnector,
}

impl std::fmt::Debug for Poll {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Poll")
            .field("url", &self.url)
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

/// What the next poll reports of the SETs of the last one.
#[derive(Debug, Default)]
struct Outcomes {
    ack: Vec<String>,
    errors: Map<String, Value>,
}

/// Polls the transmitter `issuer` until `stop`.
pub(crate) async fn run(api: RevocationApi, issuer: String, poll: Poll, stop: CancellationToken) {
    info!(url = %poll.url, "polling the Shared Signals transmitter");
    let mut backoff = ExponentialBackoff::try_new(BACKOFF_MIN, BACKOFF_MAX, 0.2)
        .expect("a valid back-off schedule");
    let mut outcomes = Outcomes::default();
    let source = format!("ssf-poll {}", poll.url);
    loop {
        let body = json!({
            "ack": outcomes.ack,
            "setErrs": outcomes.errors,
            "maxEvents": MAX_EVENTS,
            "returnImmediately": true,
        });
        let answer = tokio::select! {
            () = stop.cancelled() => return,
            answer = tokio::time::timeout(POLL_TIMEOUT, post(&poll, body)) => answer,
        };
        let answer = answer.map_err(|_| "timed out".to_owned()).and_then(|a| a);
        let wait = match answer {
            Err(error) => {
                let wait = backoff.next_delay();
                warn!(url = %poll.url, %error, retry_in = ?wait, "polling the transmitter failed");
                wait
            }
            Ok(answer) => {
                outcomes = Outcomes::default();
                let sets = answer.get("sets").and_then(Value::as_object);
                let mut unavailable = false;
                for (jti, set) in sets.into_iter().flatten() {
                    let Some(set) = set.as_str() else {
                        let error = json!({"err": "invalid_request", "description": "not a SET"});
                        outcomes.errors.insert(jti.clone(), error);
                        continue;
                    };
                    match apply(&api, set, &source, Some(&issuer)).await {
                        Ok(()) => outcomes.ack.push(jti.clone()),
                        Err(Failure::Refused(refusal)) => {
                            let error = json!({"err": refusal.0, "description": refusal.1});
                            outcomes.errors.insert(jti.clone(), error);
                        }
                        Err(Failure::Unavailable(_)) => unavailable = true,
                    }
                }
                let more = answer.get("moreAvailable").and_then(Value::as_bool) == Some(true);
                let reported = !outcomes.ack.is_empty() || !outcomes.errors.is_empty();
                if unavailable {
                    backoff.next_delay()
                } else {
                    backoff.reset();
                    if more || reported {
                        Duration::ZERO
                    } else {
                        poll.interval
                    }
                }
            }
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// One poll: `body` as JSON to the transmitter, its JSON answer back.
async fn post(poll: &Poll, body: Value) -> Result<Value, String> {
    let url = &poll.url;
    let host = url.host().ok_or("the poll URL has no host")?;
    let https = url.scheme_str() == Some("https");
    let port = url.port_u16().unwrap_or(if https { 443 } else { 80 });
    let tcp = TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("connecting to {host}:{port}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let mut request = Request::post(url.clone())
        .header(HOST, url.authority().map(|a| a.as_str()).unwrap_or(host))
        .header(CONTENT_TYPE, "application/json")
        .header(ACCEPT, "application/json");
    if let Some(token) = &poll.token {
        request = request.header(AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = request
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| format!("building the request: {e}"))?;
    let answer = if https {
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| format!("the poll URL's host: {e}"))?;
        let tls = poll
            .tls
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS with {host}: {e}"))?;
        exchange(TokioIo::new(tls), request).await?
    } else {
        exchange(TokioIo::new(tcp), request).await?
    };
    serde_json::from_slice(&answer).map_err(|e| format!("the answer is not JSON: {e}"))
}

/// Sends `request` over `io` (HTTP/1.1) and reads a 200 answer's body.
async fn exchange<I>(io: I, request: Request<Full<Bytes>>) -> Result<Bytes, String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    tokio::spawn(connection);
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    let status = response.status();
    let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
        .collect()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?
        .to_bytes();
    if status != hyper::StatusCode::OK {
        let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        return Err(format!("the transmitter answered {status}: {text}"));
    }
    Ok(body)
}
