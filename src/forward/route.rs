//! Which global owns a forwarded series: rendezvous (highest-random-weight) hashing of the series key over the
//! current members.
//!
//! The routing key is the series key as it travels (name, type, sorted and distinct tags), hashed with xxh3 and a
//! fixed seed, so that every local and every proxy computes the same owner for the same series without talking to
//! each other. A member is named by its `host:port` as configured or discovered; its score for a key is a mix of
//! the key's hash and the member's. The owner is the member with the highest score; when it cannot be reached,
//! the next highest takes its share, and only that member's keys move when it leaves or joins.

use std::sync::Arc;

use xxhash_rust::xxh3::{xxh3_64_with_seed, Xxh3};

use super::view;

/// The seed of routing hashes ("harrier-route"). Never change it: locals and proxies of different versions must
/// agree on owners.
const ROUTE_SEED: u64 = 0x6861_7272_6965_7272;

/// The routing hash of a series key, fed in parts: name and type, then each tag in order.
pub struct RouteHasher(Xxh3);

impl RouteHasher {
    pub fn new(name: &[u8], kind: i32) -> RouteHasher {
        let mut h = Xxh3::with_seed(ROUTE_SEED);
        h.update(name);
        h.update(&[0xff, kind as u8]);
        RouteHasher(h)
    }

    pub fn tag(&mut self, tag: &[u8]) {
        self.0.update(&[0xff]);
        self.0.update(tag);
    }

    pub fn finish(self) -> u64 {
        self.0.digest()
    }
}

/// The routing hash of a forwarded metric's series key.
pub fn route_hash(m: &view::Metric) -> u64 {
    let mut h = RouteHasher::new(m.name.as_bytes(), m.r#type);
    for t in &m.tags {
        h.tag(t.as_bytes());
    }
    h.finish()
}

/// A member's score for a key: a 64-bit finaliser (splitmix64's) of the two hashes.
#[inline]
fn score(key: u64, member: u64) -> u64 {
    let mut x = key ^ member;
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The current members of the global tier, in a fixed order (sorted by address).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Members {
    addrs: Vec<Arc<str>>,
    hashes: Vec<u64>,
}

impl Members {
    /// Members from addresses (`host:port`; duplicates are merged).
    pub fn new<S: AsRef<str>>(addrs: impl IntoIterator<Item = S>) -> Members {
        let mut addrs: Vec<Arc<str>> = addrs
            .into_iter()
            .map(|a| Arc::from(crate::config::strip_http_scheme(a.as_ref())))
            .collect();
        addrs.sort();
        addrs.dedup();
        let hashes = addrs
            .iter()
            .map(|a| xxh3_64_with_seed(a.as_bytes(), ROUTE_SEED))
            .collect();
        Members { addrs, hashes }
    }

    pub fn len(&self) -> usize {
        self.addrs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.addrs.is_empty()
    }

    pub fn addrs(&self) -> &[Arc<str>] {
        &self.addrs
    }

    /// The index of the member that owns `key` among those `usable` says yes to, or `None` if it says no to all.
    #[inline]
    pub fn owner(&self, key: u64, mut usable: impl FnMut(usize) -> bool) -> Option<usize> {
        let mut best: Option<(u64, usize)> = None;
        for (i, &h) in self.hashes.iter().enumerate() {
            let s = score(key, h);
            if best.is_none_or(|(b, _)| s > b) && usable(i) {
                best = Some((s, i));
            }
        }
        best.map(|(_, i)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(n: u64) -> impl Iterator<Item = u64> {
        (0..n).map(|i| {
            route_hash(&view::Metric {
                name: format!("svc.metric.{}", i % 1000),
                tags: vec![format!("host:h{}", i / 1000), "env:prod".into()],
                r#type: 3,
                ..Default::default()
            })
        })
    }

    #[test]
    fn every_member_gets_an_even_share_of_series() {
        for n in [3usize, 5, 10] {
            let m = Members::new((0..n).map(|i| format!("10.0.0.{i}:8128")));
            let mut load = vec![0u64; n];
            for k in keys(30_000) {
                load[m.owner(k, |_| true).unwrap()] += 1;
            }
            let mean = 30_000.0 / n as f64;
            let max = *load.iter().max().unwrap() as f64;
            assert!(max / mean <= 1.1, "{n} members: loads {load:?}");
        }
    }

    #[test]
    fn only_the_keys_of_a_member_that_leaves_move_and_they_go_to_their_next_choice() {
        let all = Members::new(["a:1", "b:1", "c:1", "d:1"]);
        let without_b = Members::new(["a:1", "c:1", "d:1"]);
        let b = all.addrs().iter().position(|a| &**a == "b:1").unwrap();
        for k in keys(10_000) {
            let before = &all.addrs()[all.owner(k, |_| true).unwrap()];
            let after = &without_b.addrs()[without_b.owner(k, |_| true).unwrap()];
            let skipping_b = &all.addrs()[all.owner(k, |i| i != b).unwrap()];
            assert_eq!(after, skipping_b, "removing a member = skipping it");
            if &**before != "b:1" {
                assert_eq!(before, after, "a key of a member that stayed moved");
            }
        }
    }

    #[test]
    fn the_owner_does_not_depend_on_the_order_members_are_listed_in() {
        let a = Members::new(["x:1", "y:2", "z:3"]);
        let b = Members::new(["z:3", "http://x:1", "y:2", "y:2"]);
        assert_eq!(a, b);
        assert_eq!(a.owner(42, |_| true), b.owner(42, |_| true));
        assert_eq!(a.owner(42, |_| false), None);
    }

    #[test]
    fn the_routing_hash_is_fixed_across_processes_and_versions() {
        // A change here re-shards every fleet during a rolling upgrade: keep these values.
        let m = view::Metric {
            name: "api.latency".into(),
            tags: vec!["route:charges".into()],
            r#type: view::MetricType::Timer as i32,
            ..Default::default()
        };
        let h = route_hash(&m);
        assert_eq!(h, 628_601_515_348_797_356, "the routing hash changed");
        assert_ne!(h, route_hash(&view::Metric { r#type: 4, ..m.clone() }));
        assert_ne!(h, route_hash(&view::Metric { tags: vec![], ..m }));
    }
}
