//! `--intake DIR`: a stand-in for the Datadog intake. An HTTP/1.1 server (keep-alive, one thread per connection)
//! that answers 202 to every request at once and stores each body, as received, in `DIR/<n>.<path with / as _>`,
//! to be decoded after the run (off the measured path). It accepts connections for `--duration`, then prints the
//! number of requests.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A stand-in for the Datadog intake: answers 202 at once and stores each body for later decoding.
pub(crate) fn run(listen: SocketAddr, duration: Duration, dir: &str) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{dir}: {e}"))?;
    let listener = std::net::TcpListener::bind(listen).map_err(|e| format!("bind {listen}: {e}"))?;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let requests = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    while started.elapsed() < duration {
        let conn = match listener.accept() {
            Ok((c, _)) => c,
            Err(_) => {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
        };
        let _ = conn.set_nonblocking(false);
        let (requests, dir) = (requests.clone(), dir.to_string());
        std::thread::spawn(move || serve(conn, &requests, &dir));
    }
    eprintln!("harrier-load --intake: {} requests", requests.load(Ordering::Relaxed));
    Ok(())
}

/// Serves one connection until the client closes it (or sends something that is not a whole request): stores
/// each request's body as `dir/<n>.<path>`, `n` counted in `requests`, and answers 202 with `{}`.
fn serve(conn: TcpStream, requests: &AtomicU64, dir: &str) {
    let mut reader = BufReader::new(match conn.try_clone() {
        Ok(c) => c,
        Err(_) => return,
    });
    let mut writer = conn;
    while let Some((path, body)) = read_request(&mut reader) {
        let n = requests.fetch_add(1, Ordering::Relaxed);
        let _ = std::fs::write(format!("{dir}/{n}.{path}"), &body);
        if writer
            .write_all(b"HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
            .is_err()
        {
            return;
        }
    }
}

/// Reads one request: its path (without the query, `/` as `_`) and its body (`Content-Length` bytes). None at
/// the end of the connection or on a short read.
fn read_request(reader: &mut impl BufRead) -> Option<(String, Vec<u8>)> {
    let mut path = String::new();
    let mut length = 0usize;
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return None;
    }
    if let Some(p) = line.split_whitespace().nth(1) {
        path = p.split('?').next().unwrap_or("").replace('/', "_");
    }
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return None;
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).ok()?;
    Some((path, body))
}
