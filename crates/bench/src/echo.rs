//! The baseline: a minimal tokio line server that answers each line at once with a line the
//! size of an AT reply. Whatever the node does beyond this (parsing, the table, the store,
//! flooding, logging) is the gap between the two rates.

use std::net::SocketAddr;
use std::thread::JoinHandle;

use anyhow::{Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// The reply to `line` (without its newline): `AT Echo +0.000000000 <the fields after the
/// verb>`, which is exactly as long as a node's AT reply from a server named `Echo`. A WHATSAT
/// gets the same line plus the empty line that ends a WHATSAT reply (no JSON: the baseline
/// measures the transport, not the places query).
pub fn reply_to(line: &[u8], out: &mut Vec<u8>) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let rest = match line.iter().position(|&b| b == b' ') {
        Some(space) => &line[space..],
        None => &[][..],
    };
    out.extend_from_slice(b"AT Echo +0.000000000");
    out.extend_from_slice(rest);
    out.push(b'\n');
    if line.starts_with(b"WHATSAT") {
        out.push(b'\n');
    }
}

/// A running echo server on its own runtime (two worker threads, like a node), so it does
/// not share the generator's thread.
pub struct EchoServer {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl EchoServer {
    pub fn start() -> Result<EchoServer> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("bench-echo")
            .enable_all()
            .build()
            .context("cannot start the echo server's runtime")?;
        // Bound here (std), registered with tokio on the server's own thread, so this works
        // from inside another runtime too.
        let listener =
            std::net::TcpListener::bind("127.0.0.1:0").context("cannot bind the echo server")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("bench-echo".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(listener) = TcpListener::from_std(listener) else {
                        return;
                    };
                    tokio::select! {
                        _ = stopped => {}
                        _ = serve(listener) => {}
                    }
                });
                runtime.shutdown_background();
            })?;
        Ok(EchoServer {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let (read, mut write) = stream.into_split();
            let mut read = BufReader::new(read);
            let mut line = Vec::with_capacity(128);
            let mut out = Vec::with_capacity(128);
            loop {
                line.clear();
                match read.read_until(b'\n', &mut line).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                if line.last() == Some(&b'\n') {
                    line.pop();
                }
                out.clear();
                reply_to(&line, &mut out);
                // One write per reply, as the protocol asks of a node.
                if write.write_all(&out).await.is_err() {
                    return;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_is_as_long_as_a_nodes_at_reply() {
        let line = b"IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503";
        let mut out = Vec::new();
        reply_to(line, &mut out);
        let node =
            "AT Echo +0.263873386 kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503\n";
        assert_eq!(out.len(), node.len());
        assert!(out.starts_with(b"AT Echo "));
        out.clear();
        reply_to(b"WHATSAT kiwi 10 5", &mut out);
        assert!(out.ends_with(b"\n\n"));
    }
}
