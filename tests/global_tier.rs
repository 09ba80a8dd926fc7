//! The global tier with real processes: several globals sharing the series by rendezvous hashing, a global
//! SIGKILLed (and restarted, or left down) without losing or doubling anything, discovery from a real DNS server
//! (dnsmasq), and the same through a proxy.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::cluster::*;

fn global_yaml(grpc: &str) -> String {
    format!(
        "statsd_listen_addresses: [\"udp://127.0.0.1:0\"]\ninterval: 1s\nhostname: global\nnum_workers: 1\n\
         grpc_address: \"{grpc}\"\npercentiles: [0.5, 0.9, 0.99]\n"
    )
}

fn local_yaml(forward: &str) -> String {
    format!(
        "statsd_listen_addresses: [\"udp://127.0.0.1:0\"]\ninterval: 1s\nhostname: local\nnum_workers: 1\n\
         aggregates: [min, max, count]\npercentiles: [0.5, 0.9, 0.99]\n{forward}\n"
    )
}

fn list(addrs: &[String]) -> String {
    let quoted: Vec<String> = addrs.iter().map(|a| format!("\"{a}\"")).collect();
    format!("[{}]", quoted.join(", "))
}

fn start_globals(dir: &std::path::Path, n: usize) -> (Vec<Proc>, Vec<String>) {
    let addrs: Vec<String> = (0..n).map(|_| format!("127.0.0.1:{}", free_port())).collect();
    let globals = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| Proc::start(&format!("global{i}"), dir, &global_yaml(a)))
        .collect();
    (globals, addrs)
}

/// A seeded xorshift generator.
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Waits until every local has nothing left to send or to hear acknowledged.
fn wait_settled(locals: &[Proc]) {
    wait_until(Duration::from_secs(40), "every forwarded batch acknowledged", || {
        locals.iter().all(|l| {
            l.last_self("harrier.forward.acknowledgements_pending", "") == Some(0.0)
                && l.last_self("harrier.forward.batches_unsent", "") == Some(0.0)
        })
    });
}

/// Sum over globals of each `name#tags` that starts with `prefix`.
fn totals(globals: &[Proc], prefix: &str) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for g in globals {
        for (k, v) in g.totals() {
            if k.starts_with(prefix) {
                *out.entry(k).or_insert(0.0) += v;
            }
        }
    }
    out
}

/// Sends `steady.c:1|c|#veneurglobalonly,k:<j>` for `series` values of j to each local every 20 ms until
/// stopped; counts what was sent per series.
struct Steady {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Steady {
    fn start(locals: Vec<SocketAddr>, series: usize) -> Steady {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let (s, n) = (stop.clone(), sent.clone());
        let lines: Vec<String> = (0..series)
            .map(|j| format!("steady.c:1|c|#veneurglobalonly,k:{j}"))
            .collect();
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                for l in &locals {
                    send(*l, &lines);
                }
                n.fetch_add(locals.len() as u64, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Steady {
            stop,
            sent,
            thread: Some(thread),
        }
    }

    /// Stops sending; returns how many times each series was sent.
    fn finish(mut self) -> f64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.sent.load(Ordering::Relaxed) as f64
    }
}

fn assert_exact(globals: &[Proc], series: usize, each: f64) {
    let t = totals(globals, "steady.c#");
    assert_eq!(t.len(), series, "every series reported");
    let wrong: Vec<_> = t.iter().filter(|(_, &v)| v != each).collect();
    assert!(
        wrong.is_empty(),
        "totals off (want {each} each): {:?}",
        &wrong[..wrong.len().min(5)]
    );
    println!("{series} series, each counted exactly {each} times across globals");
}

fn proxy_yaml(grpc: &str, globals: &[String], max_intervals: u32) -> String {
    format!(
        "proxy: true\ninterval: 1s\nhostname: proxy\nnum_workers: 1\ngrpc_address: \"{grpc}\"\n\
         forward_addresses: {}\nforward_max_intervals: {max_intervals}\nmetric_sinks: [{{kind: console}}]\n",
        list(globals)
    )
}

fn wait_proxy_settled(p: &Proc) {
    wait_until(Duration::from_secs(40), "the proxy has everything acknowledged", || {
        p.last_self("harrier.forward.acknowledgements_pending", "") == Some(0.0)
            && p.last_self("harrier.forward.batches_unsent", "") == Some(0.0)
    });
}

#[test]
fn three_globals_share_the_series_of_three_locals_and_each_series_is_reported_by_exactly_one() {
    share(false);
}

#[test]
fn through_a_proxy_three_globals_share_the_series_and_each_series_is_reported_by_exactly_one() {
    share(true);
}

fn share(through_proxy: bool) {
    let dir = temp_dir("share");
    // 4 s intervals, and everything sent just after a boundary: each local's samples of the timer fall in one
    // interval (split over two, their percentiles would be of halves, not of the union), even on a loaded machine.
    let slow = |yaml: String| yaml.replace("interval: 1s", "interval: 4s");
    let addrs: Vec<String> = (0..3).map(|_| format!("127.0.0.1:{}", free_port())).collect();
    let mut globals: Vec<Proc> = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| Proc::start(&format!("global{i}"), &dir, &slow(global_yaml(a))))
        .collect();
    let mut proxy = None;
    let forward = if through_proxy {
        let grpc = format!("127.0.0.1:{}", free_port());
        proxy = Some(Proc::start("proxy", &dir, &slow(proxy_yaml(&grpc, &addrs, 6))));
        format!("forward_address: \"{grpc}\"")
    } else {
        format!("forward_addresses: {}", list(&addrs))
    };
    let mut locals: Vec<Proc> = (0..3)
        .map(|i| Proc::start(&format!("local{i}"), &dir, &slow(local_yaml(&forward))))
        .collect();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    std::thread::sleep(Duration::from_millis(4000 - now_ms % 4000 + 50));
    let started = Instant::now();

    // 30,000 global-only counter series, a third from each local, plus series every local sends.
    let mut rng = Rng(0x5eed_0000_0000_0011);
    let mut sent_latency: Vec<f64> = Vec::new();
    for (i, l) in locals.iter().enumerate() {
        let udp = l.udp.unwrap();
        let mut lines: Vec<String> = (0..30_000)
            .filter(|s| s % 3 == i)
            .map(|s| format!("bal.c:1|c|#veneurglobalonly,n:{s}"))
            .collect();
        lines.extend((0..100).map(|j| format!("shared.c:{}|c|#veneurglobalonly,k:{j}", i + 1)));
        // Three distributions of one timer series: uniform, log-normal-ish, bimodal.
        for _ in 0..20_000 {
            let u = rng.next_f64();
            let v = match i {
                0 => u * 100.0,
                1 => (3.0 + 0.5 * (rng.next_f64() - 0.5) * 3.0).exp(),
                _ => {
                    if u < 0.5 {
                        20.0 + rng.next_f64() * 5.0
                    } else {
                        80.0 + rng.next_f64() * 10.0
                    }
                }
            };
            let text = format!("{v:.4}");
            sent_latency.push(text.parse().unwrap());
            lines.push(format!("fleet.latency:{text}|ms|#svc:api"));
        }
        let (from, to) = [(0, 4_000), (3_000, 7_000), (6_000, 10_000)][i];
        lines.extend((from..to).map(|m| format!("fleet.users:u{m}|s")));
        send(udp, &lines);
    }
    assert!(
        started.elapsed() < Duration::from_millis(3900),
        "sending took {:?}, past the interval",
        started.elapsed()
    );
    std::thread::sleep(Duration::from_secs(5));
    wait_settled(&locals);
    for l in locals.iter_mut() {
        l.stop();
    }
    std::thread::sleep(Duration::from_millis(1500));
    if let Some(p) = proxy.as_mut() {
        wait_proxy_settled(p);
        p.stop();
        std::thread::sleep(Duration::from_millis(1500));
    }
    for g in globals.iter_mut() {
        g.stop();
    }

    // Each series at exactly one global, in every interval.
    let mut per_global = Vec::new();
    let mut reporters: HashMap<(String, i64), usize> = HashMap::new();
    for g in &globals {
        let mut mine = HashSet::new();
        for p in g.user() {
            if p.name == "bal.c" {
                mine.insert(p.tags.clone());
            }
            *reporters.entry((format!("{}#{}", p.name, p.tags), p.ts)).or_default() += 1;
        }
        per_global.push(mine);
    }
    let twice: Vec<_> = reporters.iter().filter(|(_, &n)| n > 1).collect();
    assert!(
        twice.is_empty(),
        "series reported by two globals in one interval: {:?}",
        &twice[..twice.len().min(5)]
    );
    let loads: Vec<usize> = per_global.iter().map(HashSet::len).collect();
    let all: HashSet<&String> = per_global.iter().flatten().collect();
    assert_eq!(all.len(), 30_000, "every series reported");
    assert_eq!(loads.iter().sum::<usize>(), 30_000, "no series at two globals");
    let mean = 30_000.0 / 3.0;
    let max_over_mean = *loads.iter().max().unwrap() as f64 / mean;
    println!("series per global {loads:?}: max/mean {max_over_mean:.3}");
    assert!(max_over_mean <= 1.1, "balance {max_over_mean}");
    let bal = totals(&globals, "bal.c#");
    assert!(bal.values().all(|&v| v == 1.0));
    let shared = totals(&globals, "shared.c#");
    assert_eq!(shared.len(), 100);
    assert!(
        shared.values().all(|&v| v == 6.0),
        "1 + 2 + 3 from the three locals: {shared:?}"
    );

    // The merged digest, at whichever global owns it.
    let g = totals(&globals, "fleet.");
    sent_latency.sort_by(f64::total_cmp);
    let rank = |v: f64| sent_latency.partition_point(|&x| x <= v) as f64 / sent_latency.len() as f64;
    for (q, suffix) in [(0.5, "50percentile"), (0.9, "90percentile"), (0.99, "99percentile")] {
        let got = g[&format!("fleet.latency.{suffix}#svc:api")];
        let err = (rank(got) - q).abs();
        println!("p{}: {got:.4}, rank error {err:.4}", q * 100.0);
        assert!(err <= 0.01, "p{q}: rank error {err}");
    }
    let users = g["fleet.users#"];
    println!("set estimate {users} of 10000");
    assert!((users - 10_000.0).abs() / 10_000.0 < 0.02, "set estimate {users}");
}

/// One global SIGKILLed mid-run; `restart` brings it back 3 s later on the same port, or leaves it down.
fn a_killed_global_loses_nothing(restart: bool, through_proxy: bool) {
    let dir = temp_dir(if restart { "restart" } else { "down" });
    let (mut globals, addrs) = start_globals(&dir, 3);
    let max_intervals = if restart { 6 } else { 2 };
    let mut proxy = None;
    let forward = if through_proxy {
        let grpc = format!("127.0.0.1:{}", free_port());
        proxy = Some(Proc::start("proxy", &dir, &proxy_yaml(&grpc, &addrs, max_intervals)));
        format!(
            "forward_address: \"{grpc}\"\nforward_max_intervals: {}",
            max_intervals * 2
        )
    } else {
        format!(
            "forward_addresses: {}\nforward_max_intervals: {max_intervals}",
            list(&addrs)
        )
    };
    let mut locals: Vec<Proc> = (0..2)
        .map(|i| Proc::start(&format!("local{i}"), &dir, &local_yaml(&forward)))
        .collect();
    let series = 300;
    let steady = Steady::start(locals.iter().map(|l| l.udp.unwrap()).collect(), series);
    std::thread::sleep(Duration::from_millis(2_000));
    // Killed between two of its flushes: what it merged since the last one is lost with it and must come again.
    // (Killed in the milliseconds after a flush, before the locals hear its acknowledgement, it would count a
    // batch twice: the window the README names under "Counted twice", which this test does not measure.)
    globals[0].wait_between_flushes(Duration::from_millis(300));
    let killed = Instant::now();
    globals[0].kill();
    if restart {
        std::thread::sleep(Duration::from_secs(3));
        globals[0].restart();
    }
    std::thread::sleep(Duration::from_secs(4));
    let each = steady.finish();
    println!("killed for {:?}", killed.elapsed());
    std::thread::sleep(Duration::from_millis(1500));
    if let Some(p) = &proxy {
        wait_proxy_settled(p);
    }
    wait_settled(&locals);
    for l in locals.iter_mut() {
        l.stop();
    }
    std::thread::sleep(Duration::from_millis(1500));
    if let Some(p) = proxy.as_mut() {
        p.stop();
        std::thread::sleep(Duration::from_millis(1500));
    }
    for g in globals.iter_mut() {
        g.stop();
    }
    let senders: Vec<&Proc> = match &proxy {
        Some(p) => vec![p],
        None => locals.iter().collect(),
    };
    let resends: f64 = senders
        .iter()
        .map(|s| s.total_self("harrier.forward.resends", ""))
        .sum();
    let reroutes: f64 = senders
        .iter()
        .map(|s| s.total_self("harrier.forward.reroutes", ""))
        .sum();
    let dropped: f64 = senders
        .iter()
        .map(|s| s.total_self("harrier.forward.dropped", ""))
        .sum();
    println!("re-sent batches {resends}, re-routed metrics {reroutes}, dropped {dropped}");
    assert_eq!(dropped, 0.0);
    assert!(reroutes > 0.0, "the dead global's share went to the others");
    if restart {
        assert!(
            resends > 0.0,
            "what the killed global had merged and not flushed was sent again"
        );
    }
    assert_exact(&globals, series, each);
}

#[test]
fn a_global_killed_and_restarted_3s_later_loses_nothing_and_counts_nothing_twice() {
    a_killed_global_loses_nothing(true, false);
}

#[test]
fn a_global_killed_and_left_down_has_its_share_moved_to_the_others_exactly() {
    a_killed_global_loses_nothing(false, false);
}

#[test]
fn through_a_proxy_a_global_killed_and_restarted_loses_nothing() {
    a_killed_global_loses_nothing(true, true);
}

#[test]
fn through_a_proxy_a_global_killed_and_left_down_loses_nothing() {
    a_killed_global_loses_nothing(false, true);
}

#[test]
fn a_proxy_answers_503_on_healthcheck_while_no_global_is_reachable() {
    let dir = temp_dir("health");
    let http = format!("127.0.0.1:{}", free_port());
    let dead = format!("127.0.0.1:{}", free_port());
    let yaml = format!(
        "proxy: true\ninterval: 200ms\ngrpc_address: \"127.0.0.1:{}\"\nhttp_address: \"{http}\"\n\
         forward_addresses: [\"{dead}\"]\n",
        free_port()
    );
    let _proxy = Proc::start("proxy", &dir, &yaml);
    let status = || {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(&http).unwrap();
        c.write_all(b"GET /healthcheck HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut out = String::new();
        let _ = c.read_to_string(&mut out);
        out.lines().next().unwrap_or("").to_string()
    };
    wait_until(Duration::from_secs(10), "503 with no global", || {
        status().contains("503")
    });
    // A global comes up on that address: healthy again.
    let _global = Proc::start("global", &dir, &global_yaml(&dead));
    wait_until(Duration::from_secs(15), "200 once the global answers", || {
        status().contains("200")
    });
}

#[test]
fn discovery_by_dns_a_records_adds_and_removes_globals_and_keeps_the_last_list_when_dns_answers_nothing() {
    discovery_by_dns_a(false);
}

#[test]
fn through_a_proxy_discovery_by_dns_a_records_adds_and_removes_globals() {
    discovery_by_dns_a(true);
}

fn discovery_by_dns_a(through_proxy: bool) {
    let dir = temp_dir("dns-a");
    let port = free_port();
    let mut globals: Vec<Proc> = (1..=4)
        .map(|i| {
            Proc::start(
                &format!("global{i}"),
                &dir,
                &global_yaml(&format!("127.0.0.{i}:{port}")),
            )
        })
        .collect();
    let hosts = |ips: &[u8]| -> String { ips.iter().map(|i| format!("127.0.0.{i} globals.test\n")).collect() };
    let dns = Dns::start(&hosts(&[1, 2, 3]), &[]);
    let discovery = format!(
        "forward_discovery: {{kind: dns_a, name: globals.test, port: {port}, refresh: 200ms, nameserver: \"{}\"}}",
        dns.nameserver()
    );
    // The component that looks the globals up: each local, or the proxy in front of them.
    let mut proxy = None;
    let forward = if through_proxy {
        let grpc = format!("127.0.0.1:{}", free_port());
        let yaml = format!(
            "proxy: true\ninterval: 1s\nhostname: proxy\nnum_workers: 1\ngrpc_address: \"{grpc}\"\n{discovery}\n\
             metric_sinks: [{{kind: console}}]\n"
        );
        proxy = Some(Proc::start("proxy", &dir, &yaml));
        format!("forward_address: \"{grpc}\"")
    } else {
        discovery
    };
    let mut locals: Vec<Proc> = (0..2)
        .map(|i| Proc::start(&format!("local{i}"), &dir, &local_yaml(&forward)))
        .collect();
    let series = 300;
    let steady = Steady::start(locals.iter().map(|l| l.udp.unwrap()).collect(), series);
    let got = |g: &Proc| g.user().iter().filter(|p| p.name == "steady.c").count();
    wait_until(Duration::from_secs(10), "globals 1-3 receive", || {
        globals[..3].iter().all(|g| got(g) > 0)
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(got(&globals[3]), 0, "global 4 is not in DNS yet");

    dns.set_hosts(&hosts(&[1, 2, 3, 4]));
    wait_until(Duration::from_secs(10), "global 4 joins", || got(&globals[3]) > 0);

    dns.set_hosts(&hosts(&[1, 3, 4]));
    let removed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    std::thread::sleep(Duration::from_secs(8));
    // What global 2 flushes more than 5 s after it left DNS (a refresh, a local's interval boundary and its own
    // flush take at most about 2.5 s here; the rest is margin for a loaded machine).
    let late = globals[1]
        .user()
        .iter()
        .filter(|p| p.name == "steady.c" && p.ts > removed + 5)
        .count();
    assert_eq!(late, 0, "global 2 still receives after it left DNS");

    // DNS answers nothing: the locals keep the last members.
    dns.set_hosts("");
    std::thread::sleep(Duration::from_secs(3));
    let each = steady.finish();
    std::thread::sleep(Duration::from_millis(1500));
    wait_settled(&locals);
    if let Some(p) = &proxy {
        wait_proxy_settled(p);
    }
    let lookers: Vec<&Proc> = match &proxy {
        Some(p) => vec![p],
        None => locals.iter().collect(),
    };
    let errors: f64 = lookers
        .iter()
        .map(|l| l.total_self("harrier.discovery.refreshes", "result:error"))
        .sum();
    assert!(errors > 0.0, "the failed lookups are counted");
    for l in locals.iter_mut() {
        l.stop();
    }
    std::thread::sleep(Duration::from_millis(1500));
    if let Some(p) = proxy.as_mut() {
        p.stop();
        std::thread::sleep(Duration::from_millis(1500));
    }
    for g in globals.iter_mut() {
        g.stop();
    }
    assert!(got(&globals[0]) > 0 && got(&globals[2]) > 0 && got(&globals[3]) > 0);
    assert_exact(&globals, series, each);
}

#[test]
fn discovery_by_dns_srv_records_finds_each_global_with_its_own_port() {
    let dir = temp_dir("dns-srv");
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut globals: Vec<Proc> = ports
        .iter()
        .enumerate()
        .map(|(i, p)| Proc::start(&format!("global{i}"), &dir, &global_yaml(&format!("127.0.0.1:{p}"))))
        .collect();
    let srv: Vec<(&str, String, u16)> = ports
        .iter()
        .enumerate()
        .map(|(i, &p)| ("_harrier._tcp.globals.test", format!("g{i}.test"), p))
        .collect();
    let srv_refs: Vec<(&str, &str, u16)> = srv.iter().map(|(n, t, p)| (*n, t.as_str(), *p)).collect();
    let dns = Dns::start("127.0.0.1 g0.test g1.test g2.test\n", &srv_refs);
    let forward = format!(
        "forward_discovery: {{kind: dns_srv, name: _harrier._tcp.globals.test, refresh: 1s, nameserver: \"{}\"}}",
        dns.nameserver()
    );
    let mut local = Proc::start("local", &dir, &local_yaml(&forward));
    let lines: Vec<String> = (0..300).map(|j| format!("srv.c:2|c|#veneurglobalonly,k:{j}")).collect();
    send(local.udp.unwrap(), &lines);
    std::thread::sleep(Duration::from_secs(2));
    wait_settled(std::slice::from_ref(&local));
    local.stop();
    std::thread::sleep(Duration::from_millis(1500));
    for g in globals.iter_mut() {
        g.stop();
    }
    for g in &globals {
        assert!(
            g.user().iter().any(|p| p.name == "srv.c"),
            "{} received nothing",
            g.name
        );
    }
    let t = totals(&globals, "srv.c#");
    assert_eq!(t.len(), 300);
    assert!(t.values().all(|&v| v == 2.0));
}
