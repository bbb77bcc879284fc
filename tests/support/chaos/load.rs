//! The load: clients revoking fresh tokens of both issuers through the
//! replicas and checking each acknowledged one through another replica.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use revocd::pb::revocation_service_client::RevocationServiceClient;
use revocd::pb::{CheckRequest, RevokeBatchRequest, RevokeClaimRequest, RevokeRequest};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::Code;

use super::issuer::Issuer;
use super::ledger::{Attempt, Entry, Ledger, Outcome, Rule, Token};
use super::nemesis::Stage;
use super::report::{Check, Tally, ViolationKind};
use crate::support::{BearerKey, Client};

/// Longest a call may take; a hung replica answers nothing.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause after a failed call, as a client backing off would.
const AFTER_FAILURE: Duration = Duration::from_millis(50);
/// Items of one `RevokeBatch`: the most the server takes.
pub const BATCH: usize = 1_000;
/// Revocations of [`fill`]: with those of the run so far, a filter near
/// the 10,000 entries it is sized for at least, and a live set a debug
/// build takes about a second to reload.
pub const FILL: usize = 9_000;
/// How long before now the fill's tokens expired: they and their records
/// last the leeway less this, 25 s, enough for the fault that made them;
/// a live set that stayed this large would slow every later reload.
const FILL_EXPIRED_FOR: i64 = 35;

/// The load clients of one phase; they stop when [`Load::stop`] is called.
pub struct Load {
    stop: CancellationToken,
    clients: JoinSet<Vec<Checked>>,
}

/// A `Check` made after an acknowledged `Revoke`: the token, the replica
/// asked, when, and the answer; judged after the phase, when every
/// outage window is known.
pub struct Checked {
    /// The entry checked.
    pub entry: Arc<Entry>,
    /// The replica asked.
    pub replica: usize,
    /// When the call was made and answered.
    pub sent: Instant,
    /// When it was answered.
    pub answered: Instant,
    /// `Ok(revoked)` or the error.
    pub answer: Result<bool, (Code, String)>,
}

impl Load {
    /// Starts `clients` clients on `replicas` for `phase`; each sends a
    /// `Revoke` every `pace`.
    pub fn start(
        phase: usize,
        clients: usize,
        pace: Duration,
        replicas: &[SocketAddr],
        doors: &[SocketAddr],
        ledger: &Arc<Ledger>,
        tally: &Arc<Tally>,
    ) -> Load {
        let stop = CancellationToken::new();
        let mut set = JoinSet::new();
        for id in 0..clients {
            let client = LoadClient {
                id,
                phase,
                pace,
                channels: replicas.iter().map(|a| lazy_client(*a)).collect(),
                doors: doors.to_vec(),
                ledger: Arc::clone(ledger),
                tally: Arc::clone(tally),
            };
            set.spawn(client.run(stop.clone()));
        }
        Load { stop, clients: set }
    }

    /// Stops the clients, waits for their calls in flight, and returns the
    /// checks they made.
    pub async fn stop(mut self) -> Vec<Checked> {
        self.stop.cancel();
        let mut checked = Vec::new();
        while let Some(done) = self.clients.join_next().await {
            checked.extend(done.expect("load client"));
        }
        checked
    }
}

/// A client of `address` with the API key "key-mixed" (it may revoke and
/// read) that connects on first use and reconnects after the replica
/// restarts.
pub fn lazy_client(address: SocketAddr) -> Client {
    let key = "Bearer key-mixed".parse().expect("ascii key");
    client_with(address, Some(key))
}

/// [`lazy_client`] without an API key: it may only revoke a token it
/// presents (proof of possession).
pub fn keyless_client(address: SocketAddr) -> Client {
    client_with(address, None)
}

/// [`lazy_client`] with the API key "key-subscribe": it may follow the
/// filter stream.
pub fn subscriber_client(address: SocketAddr) -> Client {
    let key = "Bearer key-subscribe".parse().expect("ascii key");
    client_with(address, Some(key))
}

fn client_with(
    address: SocketAddr,
    key: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
) -> Client {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .expect("endpoint")
        .connect_timeout(Duration::from_millis(500))
        .timeout(CALL_TIMEOUT)
        .connect_lazy();
    RevocationServiceClient::with_interceptor(channel, BearerKey::new(key))
}

/// `Revoke{token}` of `token` through `client` (replica `replica`), as an
/// attempt for the ledger.
pub async fn revoke(client: &mut Client, replica: usize, token: Token) -> Attempt {
    let request = RevokeRequest {
        token: token.jwt.clone(),
        reason: "chaos".into(),
        ..Default::default()
    };
    let sent = Instant::now();
    let answer = client.revoke(request).await;
    let outcome = answer.map(|reply| reply.into_inner().cursor);
    attempt(token, replica, sent, outcome)
}

/// `RevokeClaim` of the session (`sid`) of `token`, cut off now, through
/// `client` (replica `replica`), as an attempt for the ledger: the token
/// must be refused everywhere once it is acknowledged, as if revoked by
/// its jti.
pub async fn revoke_session(client: &mut Client, replica: usize, mut token: Token) -> Attempt {
    token.rule = Rule::Session;
    let request = RevokeClaimRequest {
        issuer: token.claims.issuer.clone(),
        claim: "sid".into(),
        // Every token of the run is a session of its own, named by its jti.
        value: token.jti().to_owned(),
        not_before: 0,
        reason: "chaos session".into(),
    };
    let sent = Instant::now();
    let answer = client.revoke_claim(request).await;
    let outcome = answer.map(|reply| reply.into_inner().cursor);
    attempt(token, replica, sent, outcome)
}

/// RFC 7009 revocation of `token` through the HTTP door at `door` (of
/// replica `replica`), with [`lazy_client`]'s key as HTTP Basic, as an
/// attempt for the ledger: 200 is an OK (with no cursor), 503 is
/// UNAVAILABLE, any other answer an error that needs a fault to explain
/// it. A 200 claims the revocation is stored, as a gRPC OK does.
pub async fn revoke_through_door(door: SocketAddr, replica: usize, token: Token) -> Attempt {
    let sent = Instant::now();
    let answer = tokio::time::timeout(CALL_TIMEOUT, post_revocation(door, &token.jwt)).await;
    let outcome = match answer {
        Err(_) => Err(tonic::Status::deadline_exceeded("the door did not answer")),
        Ok(Err(error)) => Err(tonic::Status::unavailable(format!("the door: {error}"))),
        Ok(Ok(200)) => Ok(String::new()),
        Ok(Ok(503)) => Err(tonic::Status::unavailable("the door answered 503")),
        Ok(Ok(status)) => Err(tonic::Status::unknown(format!(
            "the door answered {status}"
        ))),
    };
    attempt(token, replica, sent, outcome)
}

/// `POST /oauth2/revoke` of `token`; the answer's status.
async fn post_revocation(door: SocketAddr, token: &str) -> std::io::Result<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // "mixed:key-mixed", the key of the gRPC clients.
    const BASIC: &str = "bWl4ZWQ6a2V5LW1peGVk";
    let body = format!("token={token}");
    let request = format!(
        "POST /oauth2/revoke HTTP/1.1\r\nHost: {door}\r\nConnection: close\r\n\
         Authorization: Basic {BASIC}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(door).await?;
    stream.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await?;
    let status_line = answer.split(|b| *b == b'\r').next().unwrap_or_default();
    let status = std::str::from_utf8(status_line)
        .ok()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok());
    status.ok_or_else(|| std::io::Error::other("not an HTTP answer"))
}

/// The ledger's attempt of a call sent at `sent` that answered `answer`
/// (its cursor) just now.
fn attempt(
    token: Token,
    replica: usize,
    sent: Instant,
    answer: Result<String, tonic::Status>,
) -> Attempt {
    let answered = Instant::now();
    let outcome = match answer {
        Ok(cursor) => Outcome::Acked(cursor),
        Err(status) => Outcome::Failed(status.code(), status.message().to_owned()),
    };
    Attempt {
        token,
        replica,
        sent,
        answered,
        outcome,
    }
}

/// Revokes [`FILL`] short-lived tokens of issuer A (jtis named after the
/// phase and `label`) in batches through the first replica.
pub async fn fill(stage: &Stage<'_>, label: &str) {
    let mut client = lazy_client(stage.bed.replica_addresses[0]);
    for batch in 0..FILL.div_ceil(BATCH) {
        let tokens = (0..BATCH)
            .map(|n| {
                let jti = format!("p{}-{label}-fill-{batch}-{n}", stage.phase);
                Token::living(Issuer::A, "chaos-fill", &jti, -FILL_EXPIRED_FOR)
            })
            .collect();
        revoke_batch(&mut client, 0, tokens, stage.ledger, stage.phase).await;
    }
}

/// Revokes `tokens` (at most [`BATCH`]) by jti with one `RevokeBatch`
/// through `client` (replica `replica`); each item goes to the ledger as
/// an attempt of `phase`. Returns how many were acknowledged.
pub async fn revoke_batch(
    client: &mut Client,
    replica: usize,
    tokens: Vec<Token>,
    ledger: &Ledger,
    phase: usize,
) -> usize {
    let items = tokens
        .iter()
        .map(|token| RevokeRequest {
            jti: token.jti().to_owned(),
            issuer: token.claims.issuer.clone(),
            expires_at: token.claims.expires_at.unwrap_or_default(),
            reason: "chaos batch".into(),
            ..Default::default()
        })
        .collect();
    let sent = Instant::now();
    let reply = client.revoke_batch(RevokeBatchRequest { items }).await;
    let answered = Instant::now();
    let outcomes: Vec<Outcome> = match reply {
        Ok(reply) => reply
            .into_inner()
            .results
            .into_iter()
            .map(|result| match (result.code, result.response) {
                (0, Some(response)) => Outcome::Acked(response.cursor),
                (code, _) => Outcome::Failed(Code::from_i32(code), result.error),
            })
            .collect(),
        Err(status) => {
            let failed = Outcome::Failed(status.code(), status.message().to_owned());
            vec![failed; tokens.len()]
        }
    };
    let mut acked = 0;
    for (token, outcome) in tokens.into_iter().zip(outcomes) {
        acked += usize::from(matches!(outcome, Outcome::Acked(_)));
        let attempt = Attempt {
            token,
            replica,
            sent,
            answered,
            outcome,
        };
        ledger.record(phase, attempt);
    }
    acked
}

struct LoadClient {
    id: usize,
    phase: usize,
    pace: Duration,
    channels: Vec<Client>,
    /// The replicas' HTTP doors, same index.
    doors: Vec<SocketAddr>,
    ledger: Arc<Ledger>,
    tally: Arc<Tally>,
}

impl LoadClient {
    /// Revokes fresh tokens until `stop`, starting on its own replica and
    /// moving to the next one after a failure.
    async fn run(mut self, stop: CancellationToken) -> Vec<Checked> {
        let mut target = self.id % self.channels.len();
        let mut checked = Vec::new();
        for n in 0.. {
            if stop.is_cancelled() {
                break;
            }
            let jti = format!("p{}-c{}-{n}", self.phase, self.id);
            let issuer = if n % 2 == 0 { Issuer::A } else { Issuer::B };
            let token = Token::of(issuer, &format!("chaos-{}", self.id), &jti);
            // A third of the revocations cut the token's session off
            // instead, and a sixth go through the RFC 7009 door (both
            // issuers take turns at each).
            let client = &mut self.channels[target];
            let attempt = match n % 6 {
                2 | 5 => revoke_session(client, target, token).await,
                1 => revoke_through_door(self.doors[target], target, token).await,
                _ => revoke(client, target, token).await,
            };
            let failed = matches!(attempt.outcome, Outcome::Failed(..));
            if let Some(entry) = self.ledger.record(self.phase, attempt) {
                let other = (target + 1) % self.channels.len();
                checked.push(self.check(other, entry).await);
            }
            if failed {
                target = (target + 1) % self.channels.len();
                tokio::time::sleep(AFTER_FAILURE).await;
            } else {
                tokio::time::sleep(self.pace).await;
            }
        }
        checked
    }

    async fn check(&mut self, replica: usize, entry: Arc<Entry>) -> Checked {
        check(&mut self.channels[replica], replica, entry, &self.tally).await
    }
}

/// Asks `replica` (through `client`) whether `entry`'s token is revoked;
/// a "not revoked" is a violation whatever else happens.
pub async fn check(
    client: &mut Client,
    replica: usize,
    entry: Arc<Entry>,
    tally: &Tally,
) -> Checked {
    let request = CheckRequest {
        token: entry.token.jwt.clone(),
        ..Default::default()
    };
    let sent = Instant::now();
    let answer = client.check(request).await;
    tally.checked(Check::Rpc, 1);
    let answered = Instant::now();
    let answer = match answer {
        Ok(reply) => {
            let revoked = reply.into_inner().revoked;
            if !revoked {
                // Judged here: no outage excuses a false "not revoked".
                tally.violation(
                    ViolationKind::CheckAfterAck,
                    &format!("replica-{replica}"),
                    format!(
                        "{} acknowledged, then Check said not revoked",
                        entry.token.jti()
                    ),
                );
            }
            Ok(revoked)
        }
        Err(status) => Err((status.code(), status.message().to_owned())),
    };
    Checked {
        entry,
        replica,
        sent,
        answered,
        answer,
    }
}
