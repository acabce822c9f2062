//! The flaky proxy passes traffic when healthy and cuts connections when failing.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_when_healthy_and_cuts_when_failing() {
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_address = upstream.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = upstream.accept().await {
            tokio::spawn(async move {
                let mut buffer = [0u8; 5];
                if socket.read_exact(&mut buffer).await.is_ok() {
                    let _ = socket.write_all(&buffer).await;
                }
            });
        }
    });
    let proxy = ferry_e2e::proxy::FlakyProxy::start(upstream_address).await.unwrap();
    let echo = |address| async move {
        let mut stream = tokio::net::TcpStream::connect(address).await.ok()?;
        stream.write_all(b"hello").await.ok()?;
        let mut answer = [0u8; 5];
        stream.read_exact(&mut answer).await.ok()?;
        Some(answer)
    };
    assert_eq!(echo(proxy.address).await, Some(*b"hello"));
    proxy.set_failing(true);
    assert_eq!(echo(proxy.address).await, None);
    assert_eq!(proxy.cut_connections(), 1);
    proxy.set_failing(false);
    assert_eq!(echo(proxy.address).await, Some(*b"hello"));
}
