//! Real `harrier` processes and a real DNS server (dnsmasq) on 127.0.0.0/8, for tests of the global tier.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_harrier");

/// A directory of its own for one test's files, removed at the end of the test.
pub fn temp_dir(tag: &str) -> super::Scratch {
    static N: AtomicUsize = AtomicUsize::new(0);
    super::Scratch::new(&format!(
        "harrier-cluster-{}-{tag}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

/// A TCP port free on `ip` (and, for the tests that bind several loopback addresses, on 127.0.0.1..=4 too).
pub fn free_port() -> u16 {
    loop {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let free_elsewhere = (2..=4).all(|i| std::net::TcpListener::bind(format!("127.0.0.{i}:{port}")).is_ok());
        if free_elsewhere {
            return port;
        }
    }
}

/// One line a console sink printed: `ts kind name value host=… tags=…`.
#[derive(Debug, Clone, PartialEq)]
pub struct Printed {
    pub ts: i64,
    pub kind: String,
    pub name: String,
    pub value: f64,
    pub tags: String,
}

fn parse_printed(line: &str) -> Option<Printed> {
    let mut parts = line.split(' ');
    let ts = parts.next()?.parse().ok()?;
    let kind = parts.next()?.to_string();
    let name = parts.next()?.to_string();
    let value = parts.next()?.parse().ok()?;
    let tags = line.rsplit_once(" tags=").map_or("", |(_, t)| t).to_string();
    Some(Printed {
        ts,
        kind,
        name,
        value,
        tags,
    })
}

/// A running `harrier` process whose console output is collected.
pub struct Proc {
    pub name: String,
    child: Option<Child>,
    pub config: PathBuf,
    pub printed: Arc<Mutex<Vec<Printed>>>,
    pub udp: Option<SocketAddr>,
}

impl Proc {
    /// Starts the binary with this YAML config; waits until it says it is listening.
    pub fn start(name: &str, dir: &std::path::Path, yaml: &str) -> Proc {
        let config = dir.join(format!("{name}.yaml"));
        std::fs::File::create(&config)
            .unwrap()
            .write_all(yaml.as_bytes())
            .unwrap();
        let mut p = Proc {
            name: name.to_string(),
            child: None,
            config,
            printed: Arc::default(),
            udp: None,
        };
        p.restart();
        p
    }

    /// Starts it again with the same config (after [`Proc::kill`]); what it printed before is kept.
    pub fn restart(&mut self) {
        let mut child = Command::new(BIN)
            .arg("-f")
            .arg(&self.config)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the harrier binary starts");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let name = self.name.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("listening on") {
                    let _ = tx.send(line.clone());
                }
                if std::env::var_os("HARRIER_TEST_LOG").is_some() {
                    eprintln!("[{name}] {line}");
                }
            }
        });
        let first = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("{} did not start", self.name));
        self.udp = first
            .split("udp://")
            .nth(1)
            .and_then(|rest| rest.split([';', ',', ' ']).next())
            .and_then(|a| a.trim().parse().ok());
        let stdout = child.stdout.take().unwrap();
        let printed = self.printed.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(p) = parse_printed(&line) {
                    printed.lock().unwrap().push(p);
                }
            }
        });
        self.child = Some(child);
    }

    fn signal(&mut self, sig: i32) {
        if let Some(c) = &self.child {
            // SAFETY: kill(2) on our own child's pid; no memory is involved.
            unsafe {
                libc::kill(c.id() as i32, sig);
            }
        }
    }

    /// SIGKILL: no final flush, nothing saved.
    pub fn kill(&mut self) {
        self.signal(libc::SIGKILL);
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
    }

    /// SIGTERM, then waits for the exit (the final flush included).
    pub fn stop(&mut self) {
        self.signal(libc::SIGTERM);
        if let Some(mut c) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(status)) = c.try_wait() {
                    assert!(status.success(), "{} exited with {status}", self.name);
                    // Let the stdout reader take the last lines.
                    std::thread::sleep(Duration::from_millis(100));
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            panic!("{} did not stop within 30 s of SIGTERM", self.name);
        }
    }

    /// Everything printed that is not a self-metric.
    pub fn user(&self) -> Vec<Printed> {
        self.printed
            .lock()
            .unwrap()
            .iter()
            .filter(|p| !p.name.starts_with("harrier."))
            .cloned()
            .collect()
    }

    /// The last printed value of a self-metric whose tags contain `tag`, summed over such series.
    pub fn last_self(&self, name: &str, tag: &str) -> Option<f64> {
        let printed = self.printed.lock().unwrap();
        let last_ts = printed.iter().filter(|p| p.name == name).map(|p| p.ts).max()?;
        Some(
            printed
                .iter()
                .filter(|p| p.name == name && p.ts == last_ts && p.tags.contains(tag))
                .map(|p| p.value)
                .sum(),
        )
    }

    /// A self-metric counter summed over every flush.
    pub fn total_self(&self, name: &str, tag: &str) -> f64 {
        self.printed
            .lock()
            .unwrap()
            .iter()
            .filter(|p| p.name == name && p.tags.contains(tag))
            .map(|p| p.value)
            .sum()
    }

    /// Waits until this process prints a flush later than any it had printed (a line with a newer timestamp), then
    /// `after` more: with 1 s intervals and `after` well under one, the moment returned is between two flushes,
    /// away from the milliseconds after a flush in which its acknowledgements are on their way.
    pub fn wait_between_flushes(&self, after: Duration) {
        let newest = || self.printed.lock().unwrap().iter().map(|p| p.ts).max();
        let before = newest();
        wait_until(Duration::from_secs(10), "a flush of the process", || newest() > before);
        std::thread::sleep(after);
    }

    /// Sum of printed values per `name#tags` (counters summed over intervals).
    pub fn totals(&self) -> HashMap<String, f64> {
        let mut out = HashMap::new();
        for p in self.user() {
            *out.entry(format!("{}#{}", p.name, p.tags)).or_insert(0.0) += p.value;
        }
        out
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends lines to a UDP address in datagrams of at most ~1,400 bytes.
pub fn send(addr: SocketAddr, lines: &[String]) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut datagram = String::new();
    for (i, l) in lines.iter().enumerate() {
        if datagram.len() + l.len() > 1400 {
            sock.send_to(datagram.as_bytes(), addr).unwrap();
            datagram.clear();
            if i % 64 == 0 {
                std::thread::sleep(Duration::from_micros(500));
            }
        }
        datagram.push_str(l);
        datagram.push('\n');
    }
    if !datagram.is_empty() {
        sock.send_to(datagram.as_bytes(), addr).unwrap();
    }
}

/// Waits until `cond` holds, or panics with `what` after `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(cond(), "timed out after {timeout:?} waiting for: {what}");
}

/// dnsmasq on a loopback port, serving A records from a hosts file the test rewrites (SIGHUP re-reads it) and
/// fixed SRV records.
pub struct Dns {
    child: Child,
    pub port: u16,
    /// Removed when dropped, after dnsmasq is stopped.
    dir: super::Scratch,
    hosts: PathBuf,
}

pub const DNSMASQ: &str = "/usr/sbin/dnsmasq";

impl Dns {
    /// `srv`: (name, target, port) records.
    pub fn start(hosts: &str, srv: &[(&str, &str, u16)]) -> Dns {
        assert!(
            std::path::Path::new(DNSMASQ).exists(),
            "{DNSMASQ} is missing: the discovery tests need dnsmasq (`apt-get install -y dnsmasq-base`; .ci/run \
             installs it)"
        );
        let dir = temp_dir("dns");
        let hosts_path = dir.join("hosts");
        std::fs::write(&hosts_path, hosts).unwrap();
        let conf = dir.join("srv.conf");
        let srv_lines: String = srv
            .iter()
            .map(|(name, target, port)| format!("srv-host={name},{target},{port},0,10\n"))
            .collect();
        std::fs::write(&conf, srv_lines).unwrap();
        let port = loop {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            let p = s.local_addr().unwrap().port();
            drop(s);
            if std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() {
                break p;
            }
        };
        let child = Command::new(DNSMASQ)
            .args([
                "--keep-in-foreground",
                "--log-facility=-",
                &format!("--conf-file={}", conf.display()),
                &format!("--port={port}"),
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                "--no-resolv",
                "--no-hosts",
                "--no-poll",
                "--local=/test/",
                &format!("--addn-hosts={}", hosts_path.display()),
                "--local-ttl=0",
                "--no-negcache",
                "--cache-size=0",
                "--pid-file=",
                "--user=root",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq starts");
        let dns = Dns {
            child,
            port,
            dir,
            hosts: hosts_path,
        };
        // Ready when it answers on UDP.
        wait_until(Duration::from_secs(10), "dnsmasq answers", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        dns
    }

    pub fn nameserver(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Replaces the hosts file (written beside it, then renamed) and makes dnsmasq re-read it.
    pub fn set_hosts(&self, hosts: &str) {
        let tmp = self.dir.join("hosts.new");
        std::fs::write(&tmp, hosts).unwrap();
        std::fs::rename(&tmp, &self.hosts).unwrap();
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGHUP);
        }
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
