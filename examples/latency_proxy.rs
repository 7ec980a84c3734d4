//! A loopback TCP proxy that adds a fixed one-way delay, so that bench/run can
//! measure delaytopo at WAN round-trip times against a broker on the same
//! machine. Every chunk read from either side is forwarded `--delay-ms` later,
//! in order; chunks in flight do not wait for each other (latency, not
//! bandwidth). A new connection's first bytes also wait one extra round trip,
//! as a TCP handshake over the same link would make them.
//!
//! ```text
//! cargo run --release --example latency_proxy -- --listen 35672 --target 5672 --delay-ms 10
//! ```
//!
//! The first line printed names the port (useful with `--listen 0`). With
//! `--log`, one more line per accepted connection (`connection 3`) and per
//! HTTP request line the client sends (`request 3 GET /api/queues/v`), so the
//! benchmark can count what a command sent.

use std::net::Ipv4Addr;
use std::time::Duration;

use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

#[derive(Parser)]
#[command(about = "Loopback TCP proxy adding a fixed delay in each direction")]
struct Args {
    /// Port to listen on, on 127.0.0.1 (0: pick a free one).
    #[arg(long)]
    listen: u16,
    /// Port to forward to, on 127.0.0.1.
    #[arg(long)]
    target: u16,
    /// Delay added to every chunk in each direction; 10 makes a 20 ms round trip.
    #[arg(long, default_value_t = 10.0)]
    delay_ms: f64,
    /// Print a line per connection and per HTTP request seen.
    #[arg(long)]
    log: bool,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let delay = Duration::from_secs_f64(args.delay_ms / 1000.0);
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, args.listen)).await?;
    println!(
        "latency-proxy: {} -> 127.0.0.1:{}, +{} ms each way ({} ms RTT)",
        listener.local_addr()?,
        args.target,
        args.delay_ms,
        2.0 * args.delay_ms
    );
    let mut accepted = 0u64;
    loop {
        let (client, _) = listener.accept().await?;
        accepted += 1;
        if args.log {
            println!("connection {accepted}");
        }
        let (target, logged_as) = (args.target, args.log.then_some(accepted));
        tokio::spawn(async move {
            // The handshake's round trip: no byte passes before it is over.
            let opened = Instant::now() + 2 * delay;
            let Ok(server) = TcpStream::connect((Ipv4Addr::LOCALHOST, target)).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            // A failure in either direction drops both, closing both sockets.
            let _ = tokio::try_join!(
                forward(client_read, server_write, delay, opened, logged_as),
                forward(server_read, client_write, delay, opened, None),
            );
        });
    }
}

/// Copies `from` to `to`, each chunk written `delay` after it was read (and
/// not before the handshake is over), in order; end of stream is forwarded
/// the same way, as a shutdown of the write side.
async fn forward(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    delay: Duration,
    opened: Instant,
    logged_as: Option<u64>,
) -> std::io::Result<()> {
    let (in_flight, mut arriving) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let read = async move {
        let mut buffer = vec![0u8; 65536];
        loop {
            let n = from.read(&mut buffer).await?;
            if let Some(connection) = logged_as {
                log_requests(connection, &buffer[..n]);
            }
            let due = Instant::now().max(opened) + delay;
            let _ = in_flight.send((due, buffer[..n].to_vec()));
            if n == 0 {
                return Ok(());
            }
        }
    };
    let write = async move {
        while let Some((due, chunk)) = arriving.recv().await {
            let wait = due.saturating_duration_since(Instant::now());
            if !wait.is_zero() {
                // tokio's timer rounds up to whole milliseconds, a thread's
                // sleep is exact to tens of microseconds: 113 round trips
                // would otherwise each come out about 2 ms too long.
                tokio::task::spawn_blocking(move || std::thread::sleep(wait))
                    .await
                    .map_err(std::io::Error::other)?;
            }
            if chunk.is_empty() {
                return to.shutdown().await;
            }
            to.write_all(&chunk).await?;
        }
        Ok(())
    };
    tokio::try_join!(read, write).map(|_| ())
}

/// Prints every HTTP/1 request line (`GET /path HTTP/1.1`) found in a chunk.
fn log_requests(connection: u64, chunk: &[u8]) {
    for line in chunk.split(|&byte| byte == b'\n') {
        let Ok(line) = std::str::from_utf8(line) else {
            continue;
        };
        let line = line.trim_end_matches('\r');
        let Some(request) = line
            .strip_suffix(" HTTP/1.1")
            .or_else(|| line.strip_suffix(" HTTP/1.0"))
        else {
            continue;
        };
        let method = request.split(' ').next().unwrap_or_default();
        if !method.is_empty() && method.bytes().all(|b| b.is_ascii_uppercase()) {
            println!("request {connection} {request}");
        }
    }
}
