//! `herdctl send`: talk to a node the way a client does: send a line (or all of standard
//! input), half-close, and print the reply exactly as it arrives.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::Path;
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};

use herd_config::config::{HerdConfig, DEFAULT_CONFIG_PATH};
use herd_config::hosts::Locality;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How often the reader wakes up to check the reply deadline.
const READ_TICK: Duration = Duration::from_millis(250);

/// Sends `line` (or standard input, when `line` is `-`) to server `name` and copies the reply
/// to stdout. Fails when the reply is empty or any reply line is a `? ` (invalid input).
/// `reply_timeout`: the longest silence once everything is sent (a WHATSAT may wait on an
/// upstream; a process that is not a node may never answer).
pub fn send(
    config: &HerdConfig,
    name: &str,
    line: &str,
    reply_timeout: Duration,
) -> Result<ExitCode> {
    let server = config.server(name)?;
    // Only its own host is looked up: another server's name need not resolve here.
    let reach = config.reach(server, &Locality::look_up([&server.host])?, false);
    let (local, mut endpoint) = (reach.local, reach.endpoint);
    // A server with a tls_port is spoken to over TLS there, its certificate checked
    // against the herd CA.
    let tls = match (server.tls_port, &config.tls) {
        (Some(port), Some(files)) => {
            endpoint.port = port;
            Some(herd_config::tls::client_connector(files, name)?)
        }
        _ => None,
    };
    let (stream, address) = endpoint.connect_blocking(CONNECT_TIMEOUT).map_err(|e| {
        let fix = match local {
            true => format!("start it with: herdctl{} start {name}", config_flag(config)),
            false => format!(
                "it runs on host {}: start it there with: herdctl start {name}",
                server.host
            ),
        };
        anyhow!(
            "{name} is not answering on {endpoint} ({}); {fix}",
            connect_failure(&e)
        )
    })?;
    let input: Box<dyn Read + Send> = if line == "-" {
        Box::new(io::stdin())
    } else {
        let mut bytes = line.as_bytes().to_vec();
        if !bytes.ends_with(b"\n") {
            bytes.push(b'\n');
        }
        Box::new(io::Cursor::new(bytes))
    };
    let reply = match tls {
        Some(connector) => exchange_tls(
            connector,
            stream,
            input,
            &mut io::stdout().lock(),
            (name, address),
            reply_timeout,
        )?,
        None => exchange(
            stream,
            input,
            &mut io::stdout().lock(),
            (name, address),
            reply_timeout,
        )?,
    };
    if reply.is_empty() {
        bail!("{name} closed the connection on {address} without a reply");
    }
    let invalid = reply.split(|b| *b == b'\n').any(|l| l.starts_with(b"? "));
    Ok(if invalid {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Sends `input` from a thread (so a long input never deadlocks against unread replies),
/// half-closes, and copies everything the server sends to `out` until it closes. Returns the
/// whole reply. A reader of `out` that goes away (broken pipe) only stops the copying.
fn exchange(
    stream: TcpStream,
    mut input: Box<dyn Read + Send>,
    out: &mut impl Write,
    (name, address): (&str, SocketAddr),
    reply_timeout: Duration,
) -> Result<Vec<u8>> {
    let mut writer = stream.try_clone()?;
    let (sent_tx, sent_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let result = io::copy(&mut input, &mut writer);
        let _ = writer.shutdown(Shutdown::Write);
        let _ = sent_tx.send(result);
    });

    let mut reader = stream;
    reader.set_read_timeout(Some(READ_TICK))?;
    let mut reply = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut out_open = true;
    // Set once everything is sent; from then on, silence longer than reply_timeout is an
    // error.
    let mut sent: Option<io::Result<u64>> = None;
    let mut last_activity = Instant::now();
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                reply.extend_from_slice(&buf[..n]);
                last_activity = Instant::now();
                if out_open {
                    if let Err(e) = out.write_all(&buf[..n]).and_then(|_| out.flush()) {
                        if e.kind() != io::ErrorKind::BrokenPipe {
                            return Err(anyhow!(e).context("writing the reply to stdout"));
                        }
                        out_open = false;
                    }
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if sent.is_none() {
                    if let Ok(result) = sent_rx.try_recv() {
                        sent = Some(result);
                        last_activity = Instant::now();
                    }
                }
                if sent.is_some() && last_activity.elapsed() >= reply_timeout {
                    let what = match reply.is_empty() {
                        true => "no reply",
                        false => "nothing more",
                    };
                    let holder = herd_os::port_owner::describe_port(address.port())
                        .map(|h| format!(" (the port is held by {h})"))
                        .unwrap_or_default();
                    bail!(
                        "{name} on {address} sent {what} within {}{holder}; a slow answer \
                         needs a longer --timeout",
                        seconds(reply_timeout)
                    );
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => bail!("connection to {name} on {address} failed: {e}"),
        }
    }
    if sent.is_none() {
        // The server closed first; the sender may still be blocked on an interactive stdin.
        sent = sent_rx.try_recv().ok();
    }
    match sent {
        Some(Err(e))
            if !matches!(
                e.kind(),
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
            ) =>
        {
            bail!("sending to {name} on {address} failed: {e}")
        }
        Some(Ok(0)) if reply.is_empty() => bail!("nothing to send: standard input was empty"),
        _ => Ok(reply),
    }
}

/// [`exchange`] over TLS: the input is read whole first (a TLS line is not a stream one can
/// half-close from another thread), sent, followed by TLS's close (the server's EOF), and
/// the reply is copied to `out` as it arrives until the server closes.
fn exchange_tls(
    connector: tokio_rustls::TlsConnector,
    stream: TcpStream,
    mut input: Box<dyn Read + Send>,
    out: &mut impl Write,
    (name, address): (&str, SocketAddr),
    reply_timeout: Duration,
) -> Result<Vec<u8>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut bytes = Vec::new();
    input.read_to_end(&mut bytes)?;
    if bytes.is_empty() {
        bail!("nothing to send: standard input was empty");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        stream.set_nonblocking(true)?;
        let stream = tokio::net::TcpStream::from_std(stream)?;
        let mut tls = tokio::time::timeout(
            CONNECT_TIMEOUT,
            connector.connect(herd_config::tls::server_name(), stream),
        )
        .await
        .map_err(|_| anyhow!("{name} on {address} did not finish the TLS handshake"))?
        .map_err(|e| anyhow!("TLS with {name} on {address} failed: {e}"))?;
        tls.write_all(&bytes).await?;
        tls.shutdown().await?;
        let mut reply = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut out_open = true;
        loop {
            let n = match tokio::time::timeout(reply_timeout, tls.read(&mut buf)).await {
                Err(_) => bail!(
                    "{name} on {address} sent nothing more within {}; a slow answer needs a \
                     longer --timeout",
                    seconds(reply_timeout)
                ),
                // A server that closes without TLS's close_notify has still said it all.
                Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => 0,
                Ok(result) => {
                    result.map_err(|e| anyhow!("connection to {name} on {address} failed: {e}"))?
                }
            };
            if n == 0 {
                return Ok(reply);
            }
            reply.extend_from_slice(&buf[..n]);
            if out_open {
                if let Err(e) = out.write_all(&buf[..n]).and_then(|_| out.flush()) {
                    if e.kind() != io::ErrorKind::BrokenPipe {
                        return Err(anyhow!(e).context("writing the reply to stdout"));
                    }
                    out_open = false;
                }
            }
        }
    })
}

/// `5s`, `0.5s`.
fn seconds(d: Duration) -> String {
    format!("{}s", d.as_secs_f64())
}

/// `--timeout SECS` as a duration: a positive, finite number of seconds.
pub fn reply_timeout(seconds: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(seconds)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            anyhow!("--timeout {seconds} is not a positive number of seconds; use e.g. --timeout 5")
        })
}

/// Why a connection attempt failed, in a few words.
fn connect_failure(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => {
            format!("no answer within {} s", CONNECT_TIMEOUT.as_secs())
        }
        _ => e.to_string(),
    }
}

/// ` --config PATH` when this herd file is not the one herdctl finds by default, so the
/// suggested command works as printed.
fn config_flag(config: &HerdConfig) -> String {
    let default = std::env::var_os("HERD_CONFIG")
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| DEFAULT_CONFIG_PATH.into());
    let found_by_default = std::path::absolute(Path::new(&default)).is_ok_and(|p| p == config.path);
    if found_by_default {
        return String::new();
    }
    let shown = config.path.display().to_string();
    let plain = shown
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+,:@".contains(c));
    if plain {
        format!(" --config {shown}")
    } else {
        format!(" --config '{}'", shown.replace('\'', r"'\''"))
    }
}
