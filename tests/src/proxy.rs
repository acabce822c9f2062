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

/// A TCP proxy on loopback that keeps every byte clients sent, to prove which requests a
/// client made (plain HTTP/1.1 only: the request lines are readable in what it keeps).
pub struct RecordingProxy {
    /// The address to connect to instead of the upstream.
    pub address: SocketAddr,
    sent: Arc<std::sync::Mutex<Vec<u8>>>,
}

impl RecordingProxy {
    /// Starts proxying to `upstream` (`host:port`).
    pub async fn start(upstream: String) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let sent = Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = sent.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (upstream, record) = (upstream.clone(), record.clone());
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&upstream).await else { return };
                    let (mut client_read, mut client_write) = client.into_split();
                    let (mut server_read, mut server_write) = server.into_split();
                    let answers = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
                    });
                    let mut buffer = vec![0u8; 16 * 1024];
                    loop {
                        use tokio::io::{AsyncReadExt, AsyncWriteExt};
                        let Ok(read) = client_read.read(&mut buffer).await else { break };
                        if read == 0 {
                            break;
                        }
                        record
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .extend_from_slice(&buffer[..read]);
                        if server_write.write_all(&buffer[..read]).await.is_err() {
                            break;
                        }
                    }
                    drop(server_write);
                    let _ = answers.await;
                });
            }
        });
        Ok(Self { address, sent })
    }

    /// Everything clients sent so far, as text (lossy).
    pub fn sent(&self) -> String {
        String::from_utf8_lossy(&self.sent.lock().unwrap_or_else(std::sync::PoisonError::into_inner)).into_owned()
    }
}
