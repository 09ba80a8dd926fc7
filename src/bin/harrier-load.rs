//! `harrier-load`: a DogStatsD load generator for benchmarking Harrier, and a `--discard` receiver that gives the
//! machine's receive floor.
//!
//! Send mode builds a pool of datagrams up front (deterministic from `--seed`), then sends them cyclically with
//! `sendmmsg` from `--threads` threads, at `--rate` lines per second (0: as fast as it can). It prints the
//! achieved rate every second and a summary, and with `--manifest FILE` writes exactly what it sent: per-series
//! counter totals and timer sample counts, so that a test can compare them with what the server flushed.
//!
//! Only loopback targets are allowed: this tool must never send traffic off the machine.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const USAGE: &str = "\
harrier-load: DogStatsD load generator (loopback only)

SEND:    harrier-load [--target 127.0.0.1:8125] [--threads 1] [--rate LINES_PER_SEC|0] [--duration SECS]
                      [--lines-per-datagram 10] [--series 1000] [--tags 3] [--mix c=60,g=10,ms=20,s=10]
                      [--names N] [--manifest FILE] [--seed 1]
         --names N: N metric names, each sent with every type of --mix; each line picks the next name and a
                    type by the --mix weights (series = name x type); timers get three decimals, sets draw
                    from 100 members. Without it, each series has one type and --series says how many.
RECEIVE: harrier-load --discard [--listen 127.0.0.1:8125] [--duration SECS]
INTAKE:  harrier-load --intake DIR [--listen 127.0.0.1:8080] [--duration SECS]
         an HTTP/1.1 server (keep-alive) that answers 202 to every request at once and stores each body, as
         received, in DIR/<n>.<path with / as _>, to be decoded after the run (off the measured path)
DECODE:  harrier-load --decode DIR
         prints each series of the /api/v2/series bodies (MetricPayload, zstd or zlib) stored in DIR as one JSON
         object per line, in the shape of a v1 series: metric, tags, type, interval and points [[ts, v]]
";

#[derive(Debug, Clone)]
struct Options {
    target: SocketAddr,
    threads: usize,
    rate: u64,
    duration: Duration,
    lines_per_datagram: usize,
    series: usize,
    tags: usize,
    mix: Vec<(String, u32)>,
    manifest: Option<String>,
    seed: u64,
    discard: bool,
    listen: SocketAddr,
    names: usize,
    intake: Option<String>,
    decode: Option<String>,
}

fn parse_options() -> Result<Options, String> {
    let mut o = Options {
        target: "127.0.0.1:8125".parse().unwrap_or_else(|_| unreachable!()),
        threads: 1,
        rate: 100_000,
        duration: Duration::from_secs(10),
        lines_per_datagram: 10,
        series: 1000,
        tags: 3,
        mix: vec![("c".into(), 60), ("g".into(), 10), ("ms".into(), 20), ("s".into(), 10)],
        manifest: None,
        seed: 1,
        discard: false,
        listen: "127.0.0.1:8125".parse().unwrap_or_else(|_| unreachable!()),
        names: 0,
        intake: None,
        decode: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        let num = |v: String| v.parse::<u64>().map_err(|_| format!("{v:?} is not a whole number"));
        match flag.as_str() {
            "--target" => o.target = value()?.parse().map_err(|e| format!("--target: {e}"))?,
            "--listen" => o.listen = value()?.parse().map_err(|e| format!("--listen: {e}"))?,
            "--threads" => o.threads = num(value()?)?.max(1) as usize,
            "--rate" => o.rate = num(value()?)?,
            "--duration" => {
                let v = value()?;
                let secs: f64 = v.parse().map_err(|_| format!("--duration {v:?}"))?;
                o.duration = Duration::from_secs_f64(secs);
            }
            "--lines-per-datagram" => o.lines_per_datagram = num(value()?)?.max(1) as usize,
            "--series" => o.series = num(value()?)?.max(1) as usize,
            "--tags" => o.tags = num(value()?)? as usize,
            "--seed" => o.seed = num(value()?)?,
            "--manifest" => o.manifest = Some(value()?),
            "--mix" => {
                let v = value()?;
                o.mix = v
                    .split(',')
                    .map(|part| {
                        let (k, w) = part
                            .split_once('=')
                            .ok_or(format!("--mix part {part:?} is not type=weight"))?;
                        if !["c", "g", "ms", "h", "d", "s"].contains(&k) {
                            return Err(format!("--mix: unknown type {k:?}"));
                        }
                        Ok((k.to_string(), w.parse().map_err(|_| format!("--mix weight {w:?}"))?))
                    })
                    .collect::<Result<_, String>>()?;
            }
            "--discard" => o.discard = true,
            "--names" => o.names = num(value()?)? as usize,
            "--intake" => o.intake = Some(value()?),
            "--decode" => o.decode = Some(value()?),
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    for addr in [o.target, o.listen] {
        if !addr.ip().is_loopback() {
            return Err(format!(
                "{addr} is not a loopback address: harrier-load only sends on this machine"
            ));
        }
    }
    Ok(o)
}

fn main() {
    let opts = match parse_options() {
        Ok(o) => o,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("harrier-load: {e}\n");
            }
            eprint!("{USAGE}");
            std::process::exit(if e.is_empty() { 0 } else { 2 });
        }
    };
    let result = if opts.discard {
        discard(&opts)
    } else if let Some(dir) = &opts.intake {
        intake(&opts, dir)
    } else if let Some(dir) = &opts.decode {
        decode(dir)
    } else {
        send(&opts)
    };
    if let Err(e) = result {
        eprintln!("harrier-load: {e}");
        std::process::exit(1);
    }
}

/// A small deterministic generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// One datagram of the pool and what it carries.
struct Datagram {
    bytes: Vec<u8>,
    /// (series index, counter increment)
    counters: Vec<(u32, f64)>,
    /// (series index, timer samples)
    samples: Vec<(u32, u32)>,
    lines: u32,
}

fn series_type(opts: &Options, series: usize) -> &str {
    let total: u32 = opts.mix.iter().map(|(_, w)| w).sum::<u32>().max(1);
    // Spread types over series deterministically by weight.
    let slot = (series as u64 * 2_654_435_761 % u64::from(total)) as u32;
    let mut acc = 0;
    for (k, w) in &opts.mix {
        acc += w;
        if slot < acc {
            return k;
        }
    }
    "c"
}

fn series_name(opts: &Options, series: usize) -> String {
    // With --names, a series is name x type: the name is shared by the types, and so are its tags.
    let (mut s, tag_seed) = if opts.names > 0 {
        let name = series / opts.mix.len().max(1);
        (format!("load.n{name}"), name)
    } else {
        (format!("load.{}.m{series}", series_type(opts, series)), series)
    };
    if opts.tags > 0 {
        s.push_str("|#");
        for t in 0..opts.tags {
            if t > 0 {
                s.push(',');
            }
            let _ = write!(s, "tag{t}:value{}", (tag_seed + t * 7) % 97);
        }
    }
    s
}

/// With --names: the series of a line (its name cycles; its type is drawn by the --mix weights) and its type.
fn pick_named(opts: &Options, line_no: usize, rng: &mut Rng) -> (usize, String) {
    let total: u32 = opts.mix.iter().map(|(_, w)| w).sum::<u32>().max(1);
    let r = (rng.next() % u64::from(total)) as u32;
    let mut acc = 0;
    let mut k = 0;
    for (i, (_, w)) in opts.mix.iter().enumerate() {
        acc += w;
        if r < acc {
            k = i;
            break;
        }
    }
    let name = line_no % opts.names;
    (name * opts.mix.len() + k, opts.mix[k].0.clone())
}

/// Builds the datagrams of one thread: every series appears, cyclically, in a pool of at least 256 datagrams.
fn build_pool(opts: &Options, thread: usize) -> Vec<Datagram> {
    let mut rng = Rng(opts.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (thread as u64 + 1));
    // Every name (or series) appears, cyclically; with --names, several times each, so that each takes its types.
    let lines_needed = if opts.names > 0 { opts.names * 16 } else { opts.series };
    let datagrams = lines_needed.div_ceil(opts.lines_per_datagram).max(256);
    let mut line_no = thread * 7919;
    let mut pool = Vec::with_capacity(datagrams);
    for _ in 0..datagrams {
        let mut d = Datagram {
            bytes: Vec::new(),
            counters: Vec::new(),
            samples: Vec::new(),
            lines: 0,
        };
        for _ in 0..opts.lines_per_datagram {
            let (series, kind) = if opts.names > 0 {
                pick_named(opts, line_no, &mut rng)
            } else {
                let series = line_no % opts.series;
                (series, series_type(opts, series).to_string())
            };
            let kind = kind.as_str();
            line_no += 1;
            let name = series_name(opts, series);
            let (metric, rest) = name.split_once('|').map_or((name.as_str(), ""), |(m, r)| (m, r));
            let value = match kind {
                "c" => {
                    let v = 1 + rng.next() % 5;
                    d.counters.push((series as u32, v as f64));
                    v.to_string()
                }
                "g" => (rng.next() % 10_000).to_string(),
                "s" if opts.names > 0 => format!("member{}", rng.next() % 100),
                "s" => format!("member{}", rng.next() % 100_000),
                _ => {
                    d.samples.push((series as u32, 1));
                    if opts.names > 0 {
                        format!("{}.{:03}", rng.next() % 1000, rng.next() % 1000)
                    } else {
                        format!("{}.{}", rng.next() % 1000, rng.next() % 100)
                    }
                }
            };
            let _ = writeln!(
                SliceWriter(&mut d.bytes),
                "{metric}:{value}|{kind}{}{rest}",
                if rest.is_empty() { "" } else { "|" }
            );
            d.lines += 1;
        }
        // Drop the last newline: a datagram need not end with one.
        d.bytes.pop();
        pool.push(d);
    }
    pool
}

struct SliceWriter<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for SliceWriter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// One `mmsghdr` per iovec (no address, no control data). The headers point into `iovecs`, which must not move
/// or be resized while they are used.
fn headers_for(iovecs: &mut [libc::iovec]) -> Vec<libc::mmsghdr> {
    iovecs
        .iter_mut()
        .map(|iov| {
            // SAFETY: an all-zero mmsghdr is a valid "no name, no control" header; we then set the iovec.
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_iov = iov as *mut libc::iovec;
            m.msg_hdr.msg_iovlen = 1;
            m
        })
        .collect()
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

fn send(opts: &Options) -> Result<(), String> {
    let stop = Arc::new(AtomicBool::new(false));
    let lines_sent = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    let started = Instant::now();
    for t in 0..opts.threads {
        let opts = opts.clone();
        let stop = stop.clone();
        let lines_sent = lines_sent.clone();
        handles.push(std::thread::spawn(
            move || -> Result<(Vec<Datagram>, Vec<u64>), String> {
                let pool = build_pool(&opts, t);
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
                        let due = Duration::from_secs_f64(
                            total_datagrams as f64 * lines_per_datagram as f64 / per_thread_rate,
                        );
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
            },
        ));
    }
    let mut last = 0;
    let mut second = 1;
    while started.elapsed() < opts.duration {
        let due = Duration::from_secs(second).min(opts.duration);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            std::thread::sleep(wait);
        }
        let now = lines_sent.load(Ordering::Relaxed);
        eprintln!("harrier-load: {second:>4}s {:>12} lines/s", now - last);
        last = now;
        second += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    let mut counters: BTreeMap<u32, f64> = BTreeMap::new();
    let mut samples: BTreeMap<u32, u64> = BTreeMap::new();
    let (mut datagrams, mut lines) = (0u64, 0u64);
    for h in handles {
        let (pool, sent) = h.join().map_err(|_| "a sender thread panicked".to_string())??;
        for (d, &n) in pool.iter().zip(&sent) {
            if n == 0 {
                continue;
            }
            datagrams += n;
            lines += n * u64::from(d.lines);
            for &(s, v) in &d.counters {
                *counters.entry(s).or_default() += v * n as f64;
            }
            for &(s, k) in &d.samples {
                *samples.entry(s).or_default() += u64::from(k) * n;
            }
        }
    }
    eprintln!(
        "harrier-load: sent {lines} lines in {datagrams} datagrams in {elapsed:.2}s: {:.0} lines/s, {:.0} datagrams/s",
        lines as f64 / elapsed,
        datagrams as f64 / elapsed
    );
    if let Some(path) = &opts.manifest {
        let mut json = String::new();
        let _ = write!(
            json,
            "{{\"lines\":{lines},\"datagrams\":{datagrams},\"seconds\":{elapsed:.3},\"counters\":{{"
        );
        write_series_map(&mut json, opts, &counters);
        json.push_str("},\"timer_samples\":{");
        write_series_map(&mut json, opts, &samples);
        json.push_str("}}\n");
        std::fs::write(path, json).map_err(|e| format!("cannot write {path}: {e}"))?;
    }
    Ok(())
}

/// Writes `"series name":value` pairs, comma-separated.
fn write_series_map<V: std::fmt::Display>(json: &mut String, opts: &Options, map: &BTreeMap<u32, V>) {
    for (i, (s, v)) in map.iter().enumerate() {
        let sep = if i > 0 { "," } else { "" };
        let name = series_name(opts, *s as usize).replace('"', "\\\"");
        let _ = write!(json, "{sep}\"{name}\":{v}");
    }
}

/// A stand-in for the Datadog intake: answers 202 at once and stores each body for later decoding.
fn intake(opts: &Options, dir: &str) -> Result<(), String> {
    use std::io::{BufRead, BufReader, Read, Write};
    std::fs::create_dir_all(dir).map_err(|e| format!("{dir}: {e}"))?;
    let listener = std::net::TcpListener::bind(opts.listen).map_err(|e| format!("bind {}: {e}", opts.listen))?;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let requests = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    while started.elapsed() < opts.duration {
        let conn = match listener.accept() {
            Ok((c, _)) => c,
            Err(_) => {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
        };
        let _ = conn.set_nonblocking(false);
        let (requests, dir) = (requests.clone(), dir.to_string());
        std::thread::spawn(move || {
            let mut reader = BufReader::new(match conn.try_clone() {
                Ok(c) => c,
                Err(_) => return,
            });
            let mut writer = conn;
            loop {
                let mut path = String::new();
                let mut length = 0usize;
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                if let Some(p) = line.split_whitespace().nth(1) {
                    path = p.split('?').next().unwrap_or("").replace('/', "_");
                }
                loop {
                    line.clear();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
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
                if reader.read_exact(&mut body).is_err() {
                    return;
                }
                let n = requests.fetch_add(1, Ordering::Relaxed);
                let _ = std::fs::write(format!("{dir}/{n}.{path}"), &body);
                if writer
                    .write_all(
                        b"HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
                    )
                    .is_err()
                {
                    return;
                }
            }
        });
    }
    eprintln!("harrier-load --intake: {} requests", requests.load(Ordering::Relaxed));
    Ok(())
}

/// Prints the series of the stored `/api/v2/series` bodies as v1-shaped JSON lines.
fn decode(dir: &str) -> Result<(), String> {
    use harrier::sink::datadog::json::{json_str, json_tags};
    use harrier::sink::datadog::payload::{metric_payload::MetricType, MetricPayload};
    use prost::Message;
    use std::io::{Read, Write};
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{dir}: {e}"))?;
    for entry in entries.filter_map(|e| e.ok()) {
        if !entry.file_name().to_string_lossy().ends_with("api_v2_series") {
            continue;
        }
        let raw = std::fs::read(entry.path()).map_err(|e| format!("{}: {e}", entry.path().display()))?;
        let body = if raw.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            zstd::stream::decode_all(&raw[..]).map_err(|e| format!("zstd: {e}"))?
        } else {
            let mut body = Vec::new();
            flate2::read::ZlibDecoder::new(&raw[..])
                .read_to_end(&mut body)
                .map_err(|e| format!("zlib: {e}"))?;
            body
        };
        let payload = MetricPayload::decode(&body[..]).map_err(|e| format!("MetricPayload: {e}"))?;
        for s in payload.series {
            let kind = match s.r#type() {
                MetricType::Rate => "rate",
                MetricType::Count => "count",
                _ => "gauge",
            };
            for p in &s.points {
                let mut line = String::from("{\"metric\":");
                json_str(&mut line, &s.metric);
                line.push_str(",\"tags\":");
                json_tags(&mut line, s.tags.iter().map(String::as_str));
                let _ = write!(
                    line,
                    ",\"type\":\"{kind}\",\"interval\":{},\"points\":[[{},{}]]}}",
                    s.interval, p.timestamp, p.value
                );
                writeln!(out, "{line}").map_err(|e| e.to_string())?;
            }
        }
    }
    Ok(())
}

/// Receives and counts datagrams with `recvmmsg`, nothing else: the receive floor of this machine.
fn discard(opts: &Options) -> Result<(), String> {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).map_err(|e| e.to_string())?;
    let _ = sock.set_recv_buffer_size(8 * 1024 * 1024);
    sock.bind(&opts.listen.into())
        .map_err(|e| format!("bind {}: {e}", opts.listen))?;
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .map_err(|e| e.to_string())?;
    const BATCH: usize = 64;
    const SIZE: usize = 65536;
    let mut bufs = vec![0u8; BATCH * SIZE];
    let mut iovecs: Vec<libc::iovec> = bufs
        .chunks_mut(SIZE)
        .map(|c| libc::iovec {
            iov_base: c.as_mut_ptr() as *mut libc::c_void,
            iov_len: c.len(),
        })
        .collect();
    let mut msgs = headers_for(&mut iovecs);
    let started = Instant::now();
    let (mut datagrams, mut bytes, mut last, mut second) = (0u64, 0u64, 0u64, 1u64);
    while started.elapsed() < opts.duration {
        // SAFETY: each mmsghdr points at its own 64 KiB slice of `bufs`, alive for the call; the kernel writes at
        // most iov_len bytes into each and sets msg_len.
        let n = unsafe {
            libc::recvmmsg(
                sock.as_raw_fd(),
                msgs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n > 0 {
            datagrams += n as u64;
            bytes += msgs[..n as usize].iter().map(|m| u64::from(m.msg_len)).sum::<u64>();
        }
        if started.elapsed() >= Duration::from_secs(second) {
            eprintln!(
                "harrier-load --discard: {second:>4}s {:>12} datagrams/s",
                datagrams - last
            );
            last = datagrams;
            second += 1;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    drop(msgs);
    drop(iovecs);
    eprintln!(
        "harrier-load --discard: received {datagrams} datagrams ({bytes} bytes) in {elapsed:.2}s: {:.0} datagrams/s",
        datagrams as f64 / elapsed
    );
    println!("{datagrams}");
    Ok(())
}
