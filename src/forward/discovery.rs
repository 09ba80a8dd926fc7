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
    mut stop: watch::Receiver<bool>,
) -> Result<watch::Receiver<Members>, String> {
    let resolver = resolver("forward_discovery", &cfg)?;
    let (tx, rx) = watch::channel(Members::default());
    refresh(&resolver, &cfg, &tx, &telemetry).await;
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
            refresh(&resolver, &cfg, &tx, &telemetry).await;
        }
    });
    Ok(rx)
}

async fn refresh(resolver: &TokioResolver, cfg: &DiscoveryConfig, tx: &watch::Sender<Members>, telemetry: &Telemetry) {
    let result = match lookup(resolver, cfg).await {
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
