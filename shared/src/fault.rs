//! Test support: a TCP proxy that gives one process partial network faults (latency, a black hole
//! where bytes vanish while the sockets stay up, reset connections) between it and Postgres or
//! Redis, while every other process keeps its direct, healthy connection.
//!
//! ```ignore
//! let proxy = Proxy::start(upstream_addr).await?;
//! let url = proxy.rewrite_url(&config.database_url); // give this URL to one worker only
//! proxy.set(Fault::Blackhole);                        // cut it off, half-open
//! proxy.set(Fault::None);                             // heal
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does to the bytes it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward at once.
    None,
    /// Hold every chunk this long before forwarding it.
    Delay(Duration),
    /// Forward requests at once, but hold every chunk coming back from the server this long: a
    /// statement runs and commits, and its answer arrives after the client has given up.
    DelayReplies(Duration),
    /// Read and drop every byte, in both directions; connections stay open, new ones are accepted
    /// and never reach the server (a half-open partition).
    Blackhole,
}

/// A proxy on a free loopback port in front of one upstream address.
pub struct Proxy {
    addr: SocketAddr,
    fault: watch::Sender<Fault>,
    /// Bumped by [`Proxy::reset`]: every connection opened before the bump closes.
    generation: watch::Sender<u64>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (fault, _) = watch::channel(Fault::None);
        let (generation, _) = watch::channel(0u64);
        let faults = fault.clone();
        let generations = generation.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let _ = client.set_nodelay(true);
                tokio::spawn(carry(client, upstream, faults.subscribe(), generations.subscribe()));
            }
        });
        Ok(Proxy {
            addr,
            fault,
            generation,
            accept,
        })
    }

    /// A proxy in front of the server a `postgres://` or `redis://` URL names, and the URL to give
    /// the process that should go through it.
    pub async fn for_url(url: &str) -> std::io::Result<(Proxy, String)> {
        let scheme_end = url.find("://").map_or(0, |i| i + 3);
        let rest = &url[scheme_end..];
        let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
        let host_port = authority.rsplit('@').next().unwrap_or(authority);
        let default_port = if url.starts_with("redis") { 6379 } else { 5432 };
        let target = if host_port.contains(':') {
            host_port.to_owned()
        } else {
            format!("{host_port}:{default_port}")
        };
        let upstream = tokio::net::lookup_host(target.as_str())
            .await?
            .next()
            .ok_or_else(|| std::io::Error::other(format!("{target} does not resolve")))?;
        let proxy = Proxy::start(upstream).await?;
        let proxied = proxy.rewrite_url(url);
        Ok((proxy, proxied))
    }

    /// Where to connect instead of the upstream.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `url` (`postgres://…` or `redis://…`) with its host and port replaced by the proxy's.
    pub fn rewrite_url(&self, url: &str) -> String {
        let scheme_end = url.find("://").map_or(0, |i| i + 3);
        let rest = &url[scheme_end..];
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let userinfo_end = rest[..authority_end].rfind('@').map_or(0, |i| i + 1);
        format!(
            "{}{}{}{}",
            &url[..scheme_end],
            &rest[..userinfo_end],
            self.addr,
            &rest[authority_end..]
        )
    }

    pub fn set(&self, fault: Fault) {
        self.fault.send_replace(fault);
    }

    /// Closes every connection open now (both sides see the socket close).
    pub fn reset(&self) {
        self.generation.send_modify(|g| *g += 1);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.reset();
    }
}

async fn carry(
    client: TcpStream,
    upstream: SocketAddr,
    fault: watch::Receiver<Fault>,
    mut generation: watch::Receiver<u64>,
) {
    let born = *generation.borrow_and_update();
    // While black-holed, a new connection never reaches the server.
    let mut waiting = fault.clone();
    if waiting.wait_for(|f| *f != Fault::Blackhole).await.is_err() {
        return;
    }
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let fault = Arc::new(fault);
    let up = pump(client_read, server_write, fault.clone(), false);
    let down = pump(server_read, client_write, fault, true);
    tokio::select! {
        _ = up => {}
        _ = down => {}
        _ = generation.wait_for(|g| *g != born) => {}
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    fault: Arc<watch::Receiver<Fault>>,
    replies: bool,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let now = *fault.borrow();
        match now {
            Fault::None => {}
            Fault::Delay(by) => tokio::time::sleep(by).await,
            Fault::DelayReplies(by) if replies => tokio::time::sleep(by).await,
            Fault::DelayReplies(_) => {}
            Fault::Blackhole => continue,
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn urls_point_at_the_proxy() {
        let proxy = Proxy::start("127.0.0.1:9".parse().expect("addr")).await.expect("proxy");
        let at = proxy.addr();
        assert_eq!(
            proxy.rewrite_url("postgres://u:p@db.example:5432/jobq?sslmode=disable"),
            format!("postgres://u:p@{at}/jobq?sslmode=disable")
        );
        assert_eq!(proxy.rewrite_url("redis://127.0.0.1:6379"), format!("redis://{at}"));
        assert_eq!(
            proxy.rewrite_url("redis://:secret@cache/0"),
            format!("redis://:secret@{at}/0")
        );
    }

    #[tokio::test]
    async fn faults_apply_to_traffic_through_the_proxy() {
        let echo = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let upstream = echo.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let proxy = Proxy::start(upstream).await.expect("proxy");
        let mut conn = TcpStream::connect(proxy.addr()).await.expect("connect");
        let mut buf = [0u8; 4];

        conn.write_all(b"ping").await.expect("write");
        conn.read_exact(&mut buf).await.expect("echo");
        assert_eq!(&buf, b"ping");

        proxy.set(Fault::Blackhole);
        conn.write_all(b"lost").await.expect("write still succeeds");
        let read = tokio::time::timeout(Duration::from_millis(300), conn.read_exact(&mut buf)).await;
        assert!(read.is_err(), "nothing comes back through a black hole");

        proxy.set(Fault::None);
        conn.write_all(b"back").await.expect("write");
        conn.read_exact(&mut buf).await.expect("echo after healing");
        assert_eq!(&buf, b"back");

        proxy.reset();
        let n = tokio::time::timeout(Duration::from_secs(2), conn.read(&mut buf))
            .await
            .expect("reset closes the connection");
        assert!(matches!(n, Ok(0) | Err(_)));
    }
}
