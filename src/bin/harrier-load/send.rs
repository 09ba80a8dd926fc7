//! The load sender (the default mode): each of `--threads` threads builds its pool of datagrams (`pool`), then
//! sends it cyclically with `sendmmsg` at its share of `--rate`; the main thread prints the achieved rate every
//! second, then the summary (`sent N lines in M datagrams in S s: ...`, which scripts grep) and the manifest.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::mmsg::headers_for;
use crate::pool::{build_pool, series_name, Datagram};
use crate::SendArgs;

/// What a sender thread hands back: its pool, and how many times each of its datagrams went out.
type Sent = (Vec<Datagram>, Vec<u64>);

/// Sends for `duration`, then prints the summary and writes the manifest.
pub(crate) fn run(opts: &SendArgs, duration: Duration) -> Result<(), String> {
    let stop = Arc::new(AtomicBool::new(false));
    let lines_sent = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    let started = Instant::now();
    for t in 0..opts.threads {
        let opts = opts.clone();
        let stop = stop.clone();
        let lines_sent = lines_sent.clone();
        handles.push(std::thread::spawn(move || sender(&opts, t, &stop, &lines_sent)));
    }
    report_rates(started, duration, &lines_sent);
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    let mut totals = Totals::default();
    for h in handles {
        let (pool, sent) = h.join().map_err(|_| "a sender thread panicked".to_string())??;
        totals.add(&pool, &sent);
    }
    let (lines, datagrams) = (totals.lines, totals.datagrams);
    eprintln!(
        "harrier-load: sent {lines} lines in {datagrams} datagrams in {elapsed:.2}s: {:.0} lines/s, {:.0} datagrams/s",
        lines as f64 / elapsed,
        datagrams as f64 / elapsed
    );
    if let Some(path) = &opts.manifest {
        write_manifest(path, opts, &totals, elapsed)?;
    }
    Ok(())
}

/// One sender thread: builds its pool, then sends it cyclically in batches of 32 until `stop`, paced to its share
/// of the rate. Counts the lines sent in `lines_sent` as it goes.
fn sender(opts: &SendArgs, t: usize, stop: &AtomicBool, lines_sent: &AtomicU64) -> Result<Sent, String> {
    let pool = build_pool(opts, t);
    let sock = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    sock.connect(opts.target).map_err(|e| e.to_string())?;
    let mut iovecs: Vec<libc::iovec> = pool
        .iter()
        .map(|d| libc::iovec {
            iov_base: d.bytes.as_ptr() as *mut libc::c_void,
            iov_len: d.bytes.len(),
        })
        .collect();
    let mut msgs = headers_for(&mut iovecs);
    let mut sent = vec![0u64; pool.len()];
    let lines_per_datagram = opts.lines_per_datagram as u64;
    let per_thread_rate = opts.rate as f64 / opts.threads as f64;
    let batch = 32usize;
    let t0 = Instant::now();
    let mut next = 0usize;
    let mut total_datagrams = 0u64;
    while !stop.load(Ordering::Relaxed) {
        if per_thread_rate > 0.0 {
            let due = Duration::from_secs_f64(total_datagrams as f64 * lines_per_datagram as f64 / per_thread_rate);
            if let Some(wait) = due.checked_sub(t0.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        let end = (next + batch).min(msgs.len());
        match send_batch(&sock, &mut msgs[next..end]) {
            Ok(n) => {
                for s in sent.iter_mut().skip(next).take(n) {
                    *s += 1;
                }
                total_datagrams += n as u64;
                lines_sent.fetch_add(n as u64 * lines_per_datagram, Ordering::Relaxed);
                next = if next + n >= msgs.len() { 0 } else { next + n };
            }
            // ECONNREFUSED from an earlier datagram (nobody listening) or a full socket buffer: go on.
            Err(_) => std::thread::sleep(Duration::from_micros(50)),
        }
    }
    drop(msgs);
    drop(iovecs);
    Ok((pool, sent))
}

/// `sendmmsg` on a connected socket: sends `msgs`, returns how many went out.
fn send_batch(sock: &UdpSocket, msgs: &mut [libc::mmsghdr]) -> std::io::Result<usize> {
    // SAFETY: every mmsghdr points to an iovec and buffer that live in the pool for the whole run, with lengths
    // matching the buffers; the socket is connected, so no address is needed; the kernel writes only msg_len.
    let n = unsafe { libc::sendmmsg(sock.as_raw_fd(), msgs.as_mut_ptr(), msgs.len() as libc::c_uint, 0) };
    if n < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Prints the lines sent in each second until `duration` has passed since `started`.
fn report_rates(started: Instant, duration: Duration, lines_sent: &AtomicU64) {
    let mut last = 0;
    let mut second = 1;
    while started.elapsed() < duration {
        let due = Duration::from_secs(second).min(duration);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            std::thread::sleep(wait);
        }
        let now = lines_sent.load(Ordering::Relaxed);
        eprintln!("harrier-load: {second:>4}s {:>12} lines/s", now - last);
        last = now;
        second += 1;
    }
}

/// What the threads sent, in all: per series, the counter totals and the timer sample counts.
#[derive(Default)]
struct Totals {
    counters: BTreeMap<u32, f64>,
    samples: BTreeMap<u32, u64>,
    datagrams: u64,
    lines: u64,
}

impl Totals {
    /// Adds a thread's pool, each datagram as many times as it was sent.
    fn add(&mut self, pool: &[Datagram], sent: &[u64]) {
        for (d, &n) in pool.iter().zip(sent) {
            if n == 0 {
                continue;
            }
            self.datagrams += n;
            self.lines += n * u64::from(d.lines);
            for &(s, v) in &d.counters {
                *self.counters.entry(s).or_default() += v * n as f64;
            }
            for &(s, k) in &d.samples {
                *self.samples.entry(s).or_default() += u64::from(k) * n;
            }
        }
    }
}

/// Writes the manifest: `{"lines":..,"datagrams":..,"seconds":..,"counters":{..},"timer_samples":{..}}`.
fn write_manifest(path: &str, opts: &SendArgs, totals: &Totals, elapsed: f64) -> Result<(), String> {
    let (lines, datagrams) = (totals.lines, totals.datagrams);
    let mut json = String::new();
    let _ = write!(
        json,
        "{{\"lines\":{lines},\"datagrams\":{datagrams},\"seconds\":{elapsed:.3},\"counters\":{{"
    );
    write_series_map(&mut json, opts, &totals.counters);
    json.push_str("},\"timer_samples\":{");
    write_series_map(&mut json, opts, &totals.samples);
    json.push_str("}}\n");
    std::fs::write(path, json).map_err(|e| format!("cannot write {path}: {e}"))
}

/// Writes `"series name":value` pairs, comma-separated.
fn write_series_map<V: std::fmt::Display>(json: &mut String, opts: &SendArgs, map: &BTreeMap<u32, V>) {
    for (i, (s, v)) in map.iter().enumerate() {
        let sep = if i > 0 { "," } else { "" };
        let name = series_name(opts, *s as usize).replace('"', "\\\"");
        let _ = write!(json, "{sep}\"{name}\":{v}");
    }
}
