//! `veneur-proxy` configuration files (v14.2's keys, which Veneur's HEAD still ships as `example_proxy.yaml`),
//! read as a Harrier proxy: a pass over the YAML before the rest of the Veneur translation.
//!
//! A file is a veneur-proxy file when it has one of the proxy's forwarding keys (`grpc_forward_address`,
//! `consul_forward_grpc_service_name`, `consul_forward_service_name`). Then:
//!
//! - `proxy: true`, and the gRPC destinations as veneur-proxy chooses them: with
//!   `consul_forward_grpc_service_name`, Consul wins over the static `grpc_forward_address` (as in veneur-proxy),
//!   and becomes `forward_discovery` of kind `dns_srv` on Consul's DNS interface
//!   (`<service>.service.consul`, healthy instances only, at the local agent's `127.0.0.1:8600`, refreshed every
//!   `consul_refresh_interval`); otherwise `grpc_forward_address` (one address, or a list at HEAD) becomes
//!   `forward_addresses`. A `forward_addresses` or `forward_discovery` already in the file wins over both.
//! - veneur-proxy's HTTP forwarding (`forward_address`, `consul_forward_service_name`) and its trace forwarding
//!   have no equivalent (Harrier forwards over gRPC only, and has no spans): named in the warning, ignored.
//! - Settings of the proxy's HTTP client and tracing client (`forward_timeout`, `idle_connection_timeout`,
//!   `max_idle_conns*`, `tracing_client_*`, `runtime_metrics_interval`, `ssf_destination_address`) are named in the
//!   warning and ignored; `http_address`, `grpc_address` and `stats_address` keep their meaning.

use yaml_serde::{Mapping, Value};

/// Keys that make a file a veneur-proxy file.
const MARKERS: &[&str] = &[
    "grpc_forward_address",
    "consul_forward_grpc_service_name",
    "consul_forward_service_name",
];

/// veneur-proxy settings Harrier's proxy has no use for: named in the warning, ignored.
const IGNORED: &[&str] = &[
    "consul_forward_service_name",
    "consul_trace_service_name",
    "trace_address",
    "trace_api_address",
    "forward_timeout",
    "idle_connection_timeout",
    "max_idle_conns",
    "max_idle_conns_per_host",
    "tracing_client_capacity",
    "tracing_client_flush_interval",
    "tracing_client_metrics_interval",
    "runtime_metrics_interval",
    "ssf_destination_address",
];

/// Where Consul's DNS interface answers on a host running a Consul agent (its default `ports.dns`).
const CONSUL_DNS: &str = "127.0.0.1:8600";

fn key(s: &str) -> Value {
    Value::String(s.to_string())
}

/// Whether `root` is a veneur-proxy file.
pub(super) fn is_proxy_file(root: &Mapping) -> bool {
    MARKERS.iter().any(|k| root.contains_key(*k))
}

/// Rewrites a veneur-proxy file's keys into a Harrier proxy's, in place. Keys it ignores are pushed to `ignored`
/// (one warning names them all); what it chose is pushed to `notes`, one warning each.
pub(super) fn translate(root: &mut Mapping, ignored: &mut Vec<String>, notes: &mut Vec<String>) {
    root.insert(key("proxy"), Value::Bool(true));
    let consul = non_empty(root.remove("consul_forward_grpc_service_name"));
    let refresh = root.remove("consul_refresh_interval");
    let statics = addresses(root.remove("grpc_forward_address"));
    if let Some(http) = non_empty(root.remove("forward_address")) {
        ignored.push(format!(
            "forward_address ({http}: veneur-proxy's HTTP forwarding; Harrier forwards over gRPC only)"
        ));
    }
    for k in IGNORED {
        if root.remove(*k).is_some() {
            ignored.push((*k).to_string());
        }
    }
    if root.contains_key("forward_addresses") || root.contains_key("forward_discovery") {
        notes.push("veneur-proxy destinations: the file's forward_addresses/forward_discovery win".to_string());
        return;
    }
    match consul {
        Some(service) => {
            notes.push(consul_note(&service, !statics.is_empty()));
            root.insert(key("forward_discovery"), consul_discovery(&service, refresh));
        }
        None if !statics.is_empty() => {
            let list = statics.into_iter().map(Value::String).collect();
            root.insert(key("forward_addresses"), Value::Sequence(list));
        }
        None => {}
    }
}

/// The warning that says how Consul is asked, and that the static list is not used.
fn consul_note(service: &str, has_statics: bool) -> String {
    let mut note = format!(
        "consul_forward_grpc_service_name: the globals are the SRV records of {service}.service.consul from \
         Consul's DNS interface at {CONSUL_DNS} (set forward_discovery to ask another server)"
    );
    if has_statics {
        note.push_str("; grpc_forward_address is not used, as veneur-proxy does not use it with Consul");
    }
    note
}

fn consul_discovery(service: &str, refresh: Option<Value>) -> Value {
    let mut d = Mapping::new();
    d.insert(key("kind"), key("dns_srv"));
    d.insert(key("name"), key(&format!("{service}.service.consul")));
    d.insert(key("nameserver"), key(CONSUL_DNS));
    if let Some(r) = refresh {
        d.insert(key("refresh"), r);
    }
    Value::Mapping(d)
}

fn non_empty(v: Option<Value>) -> Option<String> {
    v.and_then(|v| v.as_str().map(str::trim).filter(|s| !s.is_empty()).map(str::to_string))
}

/// `grpc_forward_address`: one address (v14.2) or a list (HEAD); empty entries skipped.
fn addresses(v: Option<Value>) -> Vec<String> {
    match v {
        Some(Value::Sequence(list)) => list.into_iter().filter_map(|v| non_empty(Some(v))).collect(),
        other => non_empty(other).into_iter().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Mapping {
        yaml_serde::from_str(yaml).unwrap()
    }

    fn run(yaml: &str) -> (Mapping, Vec<String>, Vec<String>) {
        let mut root = parse(yaml);
        let (mut ignored, mut notes) = (Vec::new(), Vec::new());
        assert!(is_proxy_file(&root));
        translate(&mut root, &mut ignored, &mut notes);
        (root, ignored, notes)
    }

    #[test]
    fn a_static_grpc_forward_address_becomes_the_proxys_forward_addresses() {
        let (root, ignored, notes) = run("grpc_forward_address: \"g:8128\"\nforward_timeout: 10s\n");
        assert_eq!(root.get("proxy"), Some(&Value::Bool(true)));
        let want: Value = yaml_serde::from_str("[g:8128]").unwrap();
        assert_eq!(root.get("forward_addresses"), Some(&want));
        assert!(!root.contains_key("forward_discovery"));
        assert_eq!(ignored, ["forward_timeout"]);
        assert!(notes.is_empty());
    }

    #[test]
    fn a_list_of_grpc_forward_addresses_keeps_every_non_empty_one() {
        let (root, _, _) = run("grpc_forward_address: [\"a:1\", \"\", \"b:2\"]\n");
        let want: Value = yaml_serde::from_str("[a:1, b:2]").unwrap();
        assert_eq!(root.get("forward_addresses"), Some(&want));
    }

    #[test]
    fn consul_wins_over_static_addresses_and_becomes_srv_discovery_on_consuls_dns() {
        let (root, _, notes) = run(
            "grpc_forward_address: \"g:8128\"\nconsul_forward_grpc_service_name: glob\nconsul_refresh_interval: 5s\n",
        );
        assert!(!root.contains_key("forward_addresses"));
        let d = root.get("forward_discovery").and_then(Value::as_mapping).unwrap();
        assert_eq!(d.get("kind").and_then(Value::as_str), Some("dns_srv"));
        assert_eq!(d.get("name").and_then(Value::as_str), Some("glob.service.consul"));
        assert_eq!(d.get("nameserver").and_then(Value::as_str), Some(CONSUL_DNS));
        assert_eq!(d.get("refresh").and_then(Value::as_str), Some("5s"));
        assert_eq!(notes.len(), 1);
        assert!(notes[0].contains("grpc_forward_address is not used"), "{notes:?}");
    }

    #[test]
    fn http_forwarding_is_named_as_ignored_and_leaves_no_destination() {
        let mut root = parse("consul_forward_service_name: web\nforward_address: \"http://v.example.com\"\n");
        assert!(is_proxy_file(&root));
        let (mut ignored, mut notes) = (Vec::new(), Vec::new());
        translate(&mut root, &mut ignored, &mut notes);
        assert!(!root.contains_key("forward_addresses") && !root.contains_key("forward_discovery"));
        assert!(ignored
            .iter()
            .any(|i| i.starts_with("forward_address (http://v.example.com")));
        assert!(ignored.iter().any(|i| i == "consul_forward_service_name"));
    }

    #[test]
    fn a_harrier_forward_discovery_in_the_file_wins_over_consul() {
        let (root, _, notes) =
            run("consul_forward_grpc_service_name: glob\nforward_discovery: {kind: dns_a, name: g.local, port: 1}\n");
        let d = root.get("forward_discovery").and_then(Value::as_mapping).unwrap();
        assert_eq!(d.get("kind").and_then(Value::as_str), Some("dns_a"));
        assert!(notes[0].contains("win"), "{notes:?}");
    }

    #[test]
    fn a_local_veneur_file_is_not_a_proxy_file() {
        let root = parse("forward_address: \"http://g:8127\"\nstatsd_listen_addresses: [\"udp://127.0.0.1:8125\"]\n");
        assert!(!is_proxy_file(&root));
    }
}
