//! Where the globals are: a fixed list, or DNS (`forward_discovery`): A records of a name (a Kubernetes headless
//! service) or SRV records (Kubernetes named ports, Consul's DNS interface), looked up every `refresh`.
//!
//! The latest members are published on a watch channel; the forwarder applies them at an interval boundary. A
//! lookup that fails or finds nobody keeps the previous members (logged, and counted in
//! `harrier.discovery.refreshes{result}`). Answers are not cached here: every refresh asks the server.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::{Resolver, TokioResolver};
use tokio::sync::watch;

use super::route::Members;
use crate::config::{DiscoveryConfig, DiscoveryKind};
use crate::telemetry::catalog::{DISCOVERY_MEMBERS, DISCOVERY_REFRESHES};
use crate::telemetry::{LimitedLog, Telemetry};

static LOG: LimitedLog = LimitedLog::new("discovery");

/// Members that never change.
pub fn fixed<S: AsRef<str>>(addrs: impl IntoIterator<Item = S>) -> watch::Receiver<Members> {
    let (tx, rx) = watch::channel(Members::new(addrs));
    // The receiver keeps the last value after the sender is gone.
    drop(tx);
    rx
}

/// A resolver for `cfg`, the configuration at `key` (named in errors).
pub(crate) fn resolver(key: &str, cfg: &DiscoveryConfig) -> Result<TokioResolver, String> {
    let mut builder = if cfg.nameserver.is_empty() {
        TokioResolver::builder_tokio().map_err(|e| format!("cannot read the system resolver configuration: {e}"))?
    } else {
        let addr: SocketAddr = cfg
            .nameserver
            .parse()
            .map_err(|_| format!("{key}.nameserver {:?}: expected ip:port", cfg.nameserver))?;
        let mut udp = ConnectionConfig::udp();
        udp.port = addr.port();
        let mut tcp = ConnectionConfig::tcp();
        tcp.port = addr.port();
        let ns = NameServerConfig::new(addr.ip(), true, vec![udp, tcp]);
        Resolver::builder_with_config(
            ResolverConfig::from_parts(None, vec![], vec![ns]),
            TokioRuntimeProvider::default(),
        )
    };
    let o = builder.options_mut();
    o.cache_size = 0;
    o.positive_max_ttl = Some(Duration::ZERO);
    o.negative_max_ttl = Some(Duration::ZERO);
    o.timeout = Duration::from_secs(2);
    o.attempts = 2;
    if !cfg.nameserver.is_empty() {
        o.use_hosts_file = ResolveHosts::Never;
    }
    builder
        .build()
        .map_err(|e| format!("cannot build the DNS resolver: {e}"))
}

fn fqdn(name: &str) -> String {
    if name.ends_with('.') {
        name.to_string()
    } else {
        format!("{name}.")
    }
}

fn member(ip: IpAddr, port: u16) -> String {
    SocketAddr::new(ip, port).to_string()
}

/// One lookup: every member it finds, as `ip:port`.
pub(crate) async fn lookup(resolver: &TokioResolver, cfg: &DiscoveryConfig) -> Result<Vec<String>, String> {
    let name = fqdn(cfg.name.trim());
    match cfg.kind {
        DiscoveryKind::DnsA => {
            let port = cfg.port.unwrap_or(0);
            let ips = resolver
                .lookup_ip(name.as_str())
                .await
                .map_err(|e| format!("{name}: {e}"))?;
            Ok(ips.iter().map(|ip| member(ip, port)).collect())
        }
        DiscoveryKind::DnsSrv => {
            let srv = resolver
                .srv_lookup(name.as_str())
                .await
                .map_err(|e| format!("{name} SRV: {e}"))?;
            let mut out = Vec::new();
            for record in srv.answers() {
                let RData::SRV(s) = &record.data else { continue };
                let target = s.target.to_string();
                // A target without an address is not a member (yet, or any more).
                match resolver.lookup_ip(target.as_str()).await {
                    Ok(ips) => out.extend(ips.iter().map(|ip| member(ip, s.port))),
                    Err(e) => LOG.log(|| format!("SRV target {target} of {name} has no address: {e}")),
                }
            }
            Ok(out)
        }
    }
}

/// Starts discovery: the first lookup is awaited (so the first interval has members if DNS has them), then the
/// name is looked up every `refresh` until `stop`.
pub async fn start(
    cfg: DiscoveryConfig,
    telemetry: Arc<Telemetry>,
    stop: watch::Receiver<bool>,
) -> Result<watch::Receiver<Members>, String> {
    let resolver = Arc::new(resolver("forward_discovery", &cfg)?);
    let lookup_cfg = cfg.clone();
    let lookups = move || {
        let (resolver, cfg) = (resolver.clone(), lookup_cfg.clone());
        async move { lookup(&resolver, &cfg).await }
    };
    Ok(watch_members(cfg, lookups, telemetry, stop).await)
}

/// The loop of [`start`], with the lookup given: the first is awaited, then one every `refresh` (every second
/// at most while none has found a member) until `stop`.
async fn watch_members<F, Fut>(
    cfg: DiscoveryConfig,
    mut lookups: F,
    telemetry: Arc<Telemetry>,
    mut stop: watch::Receiver<bool>,
) -> watch::Receiver<Members>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<Vec<String>, String>> + Send,
{
    let (tx, rx) = watch::channel(Members::default());
    publish(lookups().await, &cfg, &tx, &telemetry);
    tokio::spawn(async move {
        loop {
            // Until the first members are found, look again sooner.
            let pause = if tx.borrow().is_empty() {
                cfg.refresh.min(Duration::from_secs(1))
            } else {
                cfg.refresh
            };
            tokio::select! {
                _ = crate::shutdown::stopped(&mut stop) => return,
                _ = tokio::time::sleep(pause) => {}
            }
            let found = tokio::select! {
                _ = crate::shutdown::stopped(&mut stop) => return,
                found = lookups() => found,
            };
            publish(found, &cfg, &tx, &telemetry);
        }
    });
    rx
}

/// What one lookup found, published (an empty answer or an error keeps the previous members) and counted.
fn publish(
    found: Result<Vec<String>, String>,
    cfg: &DiscoveryConfig,
    tx: &watch::Sender<Members>,
    telemetry: &Telemetry,
) {
    let result = match found {
        Ok(found) if found.is_empty() => {
            LOG.log(|| {
                format!(
                    "{} has no members; keeping the previous {}",
                    cfg.name,
                    tx.borrow().len()
                )
            });
            "empty"
        }
        Ok(found) => {
            let members = Members::new(found);
            tx.send_if_modified(|m| {
                if *m == members {
                    return false;
                }
                LOG.log(|| format!("{}: members {:?}", cfg.name, members.addrs()));
                *m = members;
                true
            });
            "ok"
        }
        Err(e) => {
            LOG.log(|| {
                format!(
                    "lookup failed ({e}); keeping the previous {} members",
                    tx.borrow().len()
                )
            });
            "error"
        }
    };
    telemetry.add(&DISCOVERY_REFRESHES, &[&format!("result:{result}")], 1);
    telemetry.set(&DISCOVERY_MEMBERS, &[], tx.borrow().len() as f64);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    type Answer = Result<Vec<String>, String>;
    /// When each lookup was made, from the test's start.
    type Calls = Arc<Mutex<Vec<Duration>>>;

    /// A lookup that answers from a script, one answer per call (the last repeats), and records when it was called.
    fn scripted(answers: Vec<Answer>) -> (impl FnMut() -> std::future::Ready<Answer> + Send + 'static, Calls) {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let (seen, t0) = (calls.clone(), tokio::time::Instant::now());
        let mut n = 0;
        let lookup = move || {
            seen.lock().unwrap().push(t0.elapsed());
            let answer = answers[n.min(answers.len() - 1)].clone();
            n += 1;
            std::future::ready(answer)
        };
        (lookup, calls)
    }

    #[tokio::test(start_paused = true)]
    async fn lookups_repeat_every_second_until_members_are_found_then_every_refresh_and_stop_at_the_signal() {
        let cfg = DiscoveryConfig {
            kind: DiscoveryKind::DnsA,
            name: "globals.test".into(),
            port: Some(8128),
            refresh: Duration::from_secs(30),
            nameserver: String::new(),
        };
        let found = |a: &[&str]| Ok(a.iter().map(|s| s.to_string()).collect());
        let (lookup, calls) = scripted(vec![
            Err("SERVFAIL".into()),
            Ok(vec![]),
            found(&["10.0.0.1:8128"]),
            Err("timeout".into()),
            found(&["10.0.0.2:8128", "10.0.0.1:8128"]),
        ]);
        let telemetry = Arc::new(Telemetry::default());
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut members = watch_members(cfg, lookup, telemetry.clone(), stop_rx).await;
        assert!(members.borrow().is_empty());
        tokio::time::sleep(Duration::from_millis(2500)).await;
        // 0 s: an error, 1 s: an empty answer, 2 s: a member.
        assert_eq!(members.borrow_and_update().addrs().len(), 1);
        tokio::time::sleep(Duration::from_secs(30)).await;
        // 32 s: the lookup fails; the member is kept.
        assert_eq!(members.borrow().addrs().len(), 1);
        tokio::time::sleep(Duration::from_secs(30)).await;
        // 62 s: two members.
        assert_eq!(members.borrow().addrs().len(), 2);
        let secs: Vec<u64> = calls.lock().unwrap().iter().map(|d| d.as_secs()).collect();
        assert_eq!(secs, vec![0, 1, 2, 32, 62]);
        assert_eq!(telemetry.peek("harrier.discovery.refreshes", "result:error"), 2);
        assert_eq!(telemetry.peek("harrier.discovery.refreshes", "result:empty"), 1);
        stop_tx.send(true).unwrap();
        tokio::time::sleep(Duration::from_secs(120)).await;
        assert_eq!(calls.lock().unwrap().len(), 5, "no lookup after the stop");
    }
}
