//! Talking to the server: connecting, the API key, retries, and one line of
//! text for a failed call.

use std::future::Future;
use std::time::Duration;

use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Request, Status};

use revocd::pb::revocation_service_client::RevocationServiceClient;

/// Time allowed to connect to the server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time allowed for one call.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// Waits before each retry of a call that failed for a connection-class
/// reason (see [`should_retry`]); after the last, the failure stands. About
/// 8 s in all: long enough to ride out a replica restart or a Redis
/// fail-over, short enough that a dead server is reported promptly.
pub const RETRY_SCHEDULE: [Duration; 4] = [
    Duration::from_millis(200),
    Duration::from_millis(800),
    Duration::from_secs(2),
    Duration::from_secs(5),
];

/// A client of the revocation service.
pub type Client = RevocationServiceClient<Channel>;

/// Connects to `server` (`http://host:port`, `https://host:port` or a bare
/// `host:port`), with `tls` for `https://`.
///
/// # Errors
/// A malformed address, or a server that cannot be reached now.
pub async fn connect(server: &str, tls: Option<ClientTlsConfig>) -> Result<Client, String> {
    let url = if server.contains("://") {
        server.to_owned()
    } else {
        format!("http://{server}")
    };
    // The URL may carry credentials: only its redacted form is shown.
    let shown = revocd::redact::redact(&url);
    let mut endpoint = Endpoint::from_shared(url.clone())
        .map_err(|e| format!("invalid --server {shown:?}: {e}"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(CALL_TIMEOUT);
    if let Some(tls) = tls {
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|e| format!("TLS for {shown}: {}", source_chain(&e)))?;
    }
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("cannot connect to {shown}: {}", source_chain(&e)))?;
    Ok(RevocationServiceClient::new(channel))
}

/// `message` as a request carrying `key` as `authorization: Bearer <key>`.
///
/// # Errors
/// A key with characters that metadata cannot carry.
pub fn authorized<T>(message: T, key: Option<&str>) -> Result<Request<T>, String> {
    let mut request = Request::new(message);
    if let Some(key) = key {
        let value = MetadataValue::try_from(format!("Bearer {}", key.trim()))
            .map_err(|_| "the API key contains characters not allowed in metadata".to_owned())?;
        request.metadata_mut().insert("authorization", value);
    }
    Ok(request)
}

/// True for failures that say nothing about the request itself: the server
/// or its store was unreachable or too slow. Every call `revoctl` retries
/// is idempotent (revocations and reads), so trying again is safe.
pub fn should_retry(status: &Status) -> bool {
    matches!(status.code(), Code::Unavailable | Code::DeadlineExceeded)
}

/// Runs `call` until it succeeds, fails for a reason [`should_retry`]
/// rejects, or `schedule` (normally [`RETRY_SCHEDULE`]) is spent.
/// `on_retry` hears of each retry (the failure and the wait) before the
/// wait.
pub async fn with_retry<T, F, Fut>(
    schedule: &[Duration],
    mut call: F,
    mut on_retry: impl FnMut(&Status, Duration),
) -> Result<T, Status>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Status>>,
{
    let mut waits = schedule.iter();
    loop {
        match call().await {
            Err(status) if should_retry(&status) => match waits.next() {
                Some(&wait) => {
                    on_retry(&status, wait);
                    tokio::time::sleep(wait).await;
                }
                None => return Err(status),
            },
            outcome => return outcome,
        }
    }
}

/// Calls the server with `message` and the API key through `call`,
/// retried as [`with_retry`] does on [`RETRY_SCHEDULE`], with a warning on
/// stderr naming `what` before each retry.
///
/// # Errors
/// The last failure.
pub async fn retried<M, R, F, Fut>(
    client: &Client,
    key: Option<&str>,
    message: M,
    what: &str,
    call: F,
) -> Result<R, Status>
where
    M: Clone,
    F: Fn(Client, Request<M>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<R>, Status>>,
{
    let call = &call;
    let response = with_retry(
        &RETRY_SCHEDULE,
        || {
            let client = client.clone();
            let request = authorized(message.clone(), key);
            async move { call(client, request.map_err(Status::invalid_argument)?).await }
        },
        |status, wait| warn_retry(what, status, wait),
    )
    .await?;
    Ok(response.into_inner())
}
/// Tells of a retried call on stderr.
pub fn warn_retry(what: &str, status: &tonic::Status, wait: std::time::Duration) {
    eprintln!(
        "warning: {what}: {}; retrying in {}",
        describe(status.clone()),
        humantime::format_duration(wait)
    );
}

/// One line for a failed call: the status in words, then the server's
/// message.
pub fn describe(status: Status) -> String {
    let code = match status.code() {
        Code::InvalidArgument => "invalid argument",
        Code::Unauthenticated => "unauthenticated",
        Code::PermissionDenied => "permission denied",
        Code::Unavailable => "unavailable",
        Code::FailedPrecondition => "failed precondition",
        Code::DeadlineExceeded => "deadline exceeded",
        Code::Internal => "internal error",
        _ => "call failed",
    };
    format!("{code}: {}", status.message())
}

/// An error and its causes, joined with `: `.
pub fn source_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The schedule's length matters here, not its waits.
    const SCHEDULE: [Duration; 3] = [Duration::ZERO; 3];

    #[tokio::test]
    async fn retries_only_connection_failures_and_gives_up_after_the_schedule() {
        let mut calls = 0;
        let mut waits = Vec::new();
        let outcome: Result<(), Status> = with_retry(
            &SCHEDULE,
            || {
                calls += 1;
                async { Err(Status::unavailable("down")) }
            },
            |_, wait| waits.push(wait),
        )
        .await;
        assert_eq!(outcome.unwrap_err().code(), Code::Unavailable);
        assert_eq!(calls, SCHEDULE.len() + 1);
        assert_eq!(waits, SCHEDULE);

        let mut calls = 0;
        let outcome: Result<(), Status> = with_retry(
            &SCHEDULE,
            || {
                calls += 1;
                async { Err(Status::permission_denied("no")) }
            },
            |_, _| {},
        )
        .await;
        assert_eq!(outcome.unwrap_err().code(), Code::PermissionDenied);
        assert_eq!(calls, 1, "a refusal is final");

        let mut calls = 0;
        let outcome = with_retry(
            &SCHEDULE,
            || {
                calls += 1;
                let attempt = calls;
                async move {
                    if attempt < 3 {
                        Err(Status::unavailable("restarting"))
                    } else {
                        Ok(attempt)
                    }
                }
            },
            |_, _| {},
        )
        .await;
        assert_eq!(outcome.unwrap(), 3);
    }
}
