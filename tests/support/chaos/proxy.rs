//! A loopback TCP proxy in front of a replica, so the nemesis can cut the
//! connections that pass through it without touching either end, or hold
//! back the replica's replies for a while.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::Instant;

/// How long the proxy waits for the replica to accept a connection; a
/// replica that is down makes the proxy close the client's connection.
const UPSTREAM_CONNECT: Duration = Duration::from_secs(1);

/// Open links by id; a link's task removes itself when it ends.
type Links = Arc<Mutex<HashMap<u64, AbortHandle>>>;
/// How long the replica's bytes are held back, in milliseconds.
type Delay = Arc<AtomicU64>;
/// While set, connections are closed as soon as they are accepted.
type Blocked = Arc<AtomicBool>;

/// A proxy forwarding every connection to one upstream address. Its
/// address stays the same while the replica behind it dies and restarts.
/// Stops (and closes every link) when dropped.
pub struct Proxy {
    /// Where subscribers connect.
    pub address: SocketAddr,
    links: Links,
    delay: Delay,
    blocked: Blocked,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the chaos proxy");
        let address = listener.local_addr().expect("the proxy's address");
        let links = Links::default();
        let delay = Delay::default();
        let blocked = Blocked::default();
        let accept = tokio::spawn(accept(
            listener,
            Link {
                upstream,
                links: Arc::clone(&links),
                delay: Arc::clone(&delay),
                blocked: Arc::clone(&blocked),
            },
        ));
        Proxy {
            address,
            links,
            delay,
            blocked,
            accept,
        }
    }

    /// Closes every link and, until called with `false`, every new
    /// connection at once: the replica looks unreachable from here.
    pub fn set_blocked(&self, blocked: bool) {
        self.blocked.store(blocked, Ordering::Relaxed);
        if blocked {
            for link in open_links(&self.links) {
                link.abort();
            }
        }
    }

    /// Holds every byte the replica sends back for `delay` from now on
    /// (order kept; zero: forwarded at once). Requests are not delayed, so
    /// the replica answers at once and the answer arrives `delay` later.
    pub fn set_delay(&self, delay: Duration) {
        self.delay
            .store(delay.as_millis() as u64, Ordering::Relaxed);
    }

    /// `http://<address>`, for gateway and agent configurations.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Closes each open link with probability `share` (both sides see the
    /// connection end); returns how many were closed.
    pub fn drop_links(&self, rng: &mut StdRng, share: f64) -> usize {
        let chosen: Vec<AbortHandle> = open_links(&self.links)
            .into_iter()
            .filter(|_| rng.random_bool(share))
            .collect();
        for link in &chosen {
            link.abort();
        }
        chosen.len()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        for link in open_links(&self.links) {
            link.abort();
        }
    }
}

/// The open links, copied out so that no lock is held while aborting.
fn open_links(links: &Links) -> Vec<AbortHandle> {
    let links = links.lock().unwrap_or_else(|p| p.into_inner());
    links.values().cloned().collect()
}

/// What every link of a proxy shares.
struct Link {
    upstream: SocketAddr,
    links: Links,
    delay: Delay,
    blocked: Blocked,
}

async fn accept(listener: TcpListener, link: Link) {
    let Link {
        upstream,
        links,
        delay,
        blocked,
    } = link;
    let mut next_id = 0u64;
    while let Ok((inbound, _)) = listener.accept().await {
        if blocked.load(Ordering::Relaxed) {
            continue;
        }
        next_id += 1;
        let id = next_id;
        // Registered under the lock, so the link cannot end (and remove
        // itself) before it is in the map.
        let mut open = links.lock().unwrap_or_else(|p| p.into_inner());
        let registered = Deregister {
            id,
            links: Arc::clone(&links),
        };
        let task = tokio::spawn(forward(inbound, upstream, Arc::clone(&delay), registered));
        open.insert(id, task.abort_handle());
    }
}

/// Copies bytes both ways until either side closes or the link is aborted,
/// the replica's after the delay. `_registered` is part of the future from
/// its creation, so the link leaves the map even when aborted before it
/// first runs.
async fn forward(inbound: TcpStream, upstream: SocketAddr, delay: Delay, _registered: Deregister) {
    let connect = tokio::time::timeout(UPSTREAM_CONNECT, TcpStream::connect(upstream)).await;
    let Ok(Ok(outbound)) = connect else {
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let (mut from_client, mut to_client) = inbound.into_split();
    let (mut from_replica, mut to_replica) = outbound.into_split();
    // Chunks read from the replica with the time each may be sent; the
    // writer sleeps until then, so a chunk is never held longer than the
    // delay in force when it was read.
    let (held, mut due) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let read_replica = async move {
        let mut buffer = vec![0u8; 16 << 10];
        while let Ok(n @ 1..) = from_replica.read(&mut buffer).await {
            let delay = Duration::from_millis(delay.load(Ordering::Relaxed));
            if held
                .send((Instant::now() + delay, buffer[..n].to_vec()))
                .is_err()
            {
                break;
            }
        }
    };
    let write_client = async move {
        while let Some((at, bytes)) = due.recv().await {
            tokio::time::sleep_until(at).await;
            if to_client.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = to_client.shutdown().await;
    };
    let upstream = async move {
        let _ = tokio::io::copy(&mut from_client, &mut to_replica).await;
        let _ = to_replica.shutdown().await;
    };
    // Either direction ending ends the link, as a closed connection would.
    tokio::select! {
        () = async { tokio::join!(read_replica, write_client); } => {}
        () = upstream => {}
    }
}

/// Removes a link from the map when its task ends, aborted or not.
struct Deregister {
    id: u64,
    links: Links,
}

impl Drop for Deregister {
    fn drop(&mut self) {
        let mut links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        links.remove(&self.id);
    }
}
