//! A TCP proxy on loopback that can refuse service for a while, to prove that transfers
//! survive a server that fails requests (connections are accepted and cut at once).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::net::{TcpListener, TcpStream};

/// A running proxy.
pub struct FlakyProxy {
    /// The address to connect to instead of the upstream.
    pub address: SocketAddr,
    failing: Arc<AtomicBool>,
    cut: Arc<AtomicU64>,
}

impl FlakyProxy {
    /// Starts proxying to `upstream` (`host:port`).
    pub async fn start(upstream: String) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let failing = Arc::new(AtomicBool::new(false));
        let cut = Arc::new(AtomicU64::new(0));
        let (failing_flag, cut_count) = (failing.clone(), cut.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if failing_flag.load(Ordering::SeqCst) {
                    cut_count.fetch_add(1, Ordering::SeqCst);
                    drop(client);
                    continue;
                }
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        Ok(Self { address, failing, cut })
    }

    /// Starts or stops cutting new connections.
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// Connections cut so far.
    pub fn cut_connections(&self) -> u64 {
        self.cut.load(Ordering::SeqCst)
    }
}
