//! A loopback TCP proxy in front of a replica, so the nemesis can cut the
//! connections that pass through it without touching either end, refuse
//! new ones, or hold the replica's replies back.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::Instant;

/// How long the proxy waits for the replica to accept a connection; a
/// replica that is down makes the proxy close the client's connection.
const UPSTREAM_CONNECT: Duration = Duration::from_secs(1);

/// Open links by id; a link's task removes itself when it ends.
type Links = Arc<Mutex<HashMap<u64, AbortHandle>>>;
/// Longest a reply is held, whatever happens: the gateways' confirm
/// calls give up after 3 s.
const MAX_HOLD: Duration = Duration::from_secs(2);

/// Whether the replica's bytes are being held, and how many holds were
/// released: a chunk read during a hold goes out when that hold is.
#[derive(Debug, Clone, Copy, Default)]
struct Gate {
    holding: bool,
    released: u64,
}

type Hold = Arc<watch::Sender<Gate>>;
/// While set, connections are closed as soon as they are accepted.
type Blocked = Arc<AtomicBool>;

/// A proxy forwarding every connection to one upstream address. Its
/// address stays the same while the replica behind it dies and restarts.
/// Stops (and closes every link) when dropped.
pub struct Proxy {
    /// Where subscribers connect.
    pub address: SocketAddr,
    links: Links,
    hold: Hold,
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
        let hold = Hold::new(watch::channel(Gate::default()).0);
        let blocked = Blocked::default();
        let accept = tokio::spawn(accept(
            listener,
            Link {
                upstream,
                links: Arc::clone(&links),
                hold: Arc::clone(&hold),
                blocked: Arc::clone(&blocked),
            },
        ));
        Proxy {
            address,
            links,
            hold,
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

    /// Holds every byte the replica sends back from now on, until
    /// [`Proxy::release`] (or [`MAX_HOLD`]). Requests still go through, so
    /// the replica answers at once and the answer waits here.
    pub fn hold(&self) {
        self.hold.send_modify(|gate| gate.holding = true);
    }

    /// Lets everything held go, in order, and holds nothing more.
    pub fn release(&self) {
        self.hold.send_modify(|gate| {
            gate.holding = false;
            gate.released += 1;
        });
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
    hold: Hold,
    blocked: Blocked,
}

async fn accept(listener: TcpListener, link: Link) {
    let Link {
        upstream,
        links,
        hold,
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
        let task = tokio::spawn(forward(inbound, upstream, Arc::clone(&hold), registered));
        open.insert(id, task.abort_handle());
    }
}

/// Copies bytes both ways until either side closes or the link is aborted,
/// the replica's once any hold they were read in is released.
/// `_registered` is part of the future from its creation, so the link
/// leaves the map even when aborted before it first runs.
async fn forward(inbound: TcpStream, upstream: SocketAddr, hold: Hold, _registered: Deregister) {
    let connect = tokio::time::timeout(UPSTREAM_CONNECT, TcpStream::connect(upstream)).await;
    let Ok(Ok(outbound)) = connect else {
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let (mut from_client, mut to_client) = inbound.into_split();
    let (mut from_replica, mut to_replica) = outbound.into_split();
    // Chunks read from the replica, with the hold they were read in (the
    // number of holds released before it), if any.
    let (read, mut to_write) = mpsc::unbounded_channel::<(Instant, Option<u64>, Vec<u8>)>();
    let gate = hold.subscribe();
    let read_replica = async move {
        let mut buffer = vec![0u8; 16 << 10];
        while let Ok(n @ 1..) = from_replica.read(&mut buffer).await {
            let now = *hold.borrow();
            let held = now.holding.then_some(now.released);
            if read
                .send((Instant::now(), held, buffer[..n].to_vec()))
                .is_err()
            {
                break;
            }
        }
    };
    let write_client = async move {
        let mut gate = gate;
        while let Some((at, held, bytes)) = to_write.recv().await {
            if let Some(hold) = held {
                let released = gate.wait_for(|g| g.released > hold);
                let _ = tokio::time::timeout_at(at + MAX_HOLD, released).await;
            }
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
