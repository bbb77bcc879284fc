//! A loopback TCP proxy in front of a replica, so the nemesis can cut the
//! filter streams that pass through it without touching either end.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::Rng;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinHandle};

/// How long the proxy waits for the replica to accept a connection; a
/// replica that is down makes the proxy close the client's connection.
const UPSTREAM_CONNECT: Duration = Duration::from_secs(1);

/// Open links by id; a link's task removes itself when it ends.
type Links = Arc<Mutex<HashMap<u64, AbortHandle>>>;

/// A proxy forwarding every connection to one upstream address. Its
/// address stays the same while the replica behind it dies and restarts.
/// Stops (and closes every link) when dropped.
pub struct Proxy {
    /// Where subscribers connect.
    pub address: SocketAddr,
    links: Links,
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
        let accept = tokio::spawn(accept(listener, upstream, Arc::clone(&links)));
        Proxy {
            address,
            links,
            accept,
        }
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

async fn accept(listener: TcpListener, upstream: SocketAddr, links: Links) {
    let mut next_id = 0u64;
    while let Ok((inbound, _)) = listener.accept().await {
        next_id += 1;
        let id = next_id;
        // Registered under the lock, so the link cannot end (and remove
        // itself) before it is in the map.
        let mut open = links.lock().unwrap_or_else(|p| p.into_inner());
        let registered = Deregister {
            id,
            links: Arc::clone(&links),
        };
        let task = tokio::spawn(forward(inbound, upstream, registered));
        open.insert(id, task.abort_handle());
    }
}

/// Copies bytes both ways until either side closes or the link is aborted.
/// `_registered` is part of the future from its creation, so the link
/// leaves the map even when aborted before it first runs.
async fn forward(mut inbound: TcpStream, upstream: SocketAddr, _registered: Deregister) {
    let connect = tokio::time::timeout(UPSTREAM_CONNECT, TcpStream::connect(upstream)).await;
    if let Ok(Ok(mut outbound)) = connect {
        let _ = inbound.set_nodelay(true);
        let _ = outbound.set_nodelay(true);
        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
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
