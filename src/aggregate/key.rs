//! Series keys: name + type + scope + the canonical tag set (sorted, de-duplicated, extended by config).
//!
//! The key's hash is computed from the borrowed line without allocating: the name's hash, mixed with the XOR of
//! the hashes of the distinct tags (so tag order does not matter). An owned [`SeriesKey`] is built only when a
//! shard meets a series it does not hold yet; lookups compare the borrowed view with it in place.

use xxhash_rust::xxh3::{xxh3_128_with_seed, xxh3_64, xxh3_64_with_seed};

use crate::model::SharedStr;
pub use crate::model::TagSet;
use crate::protocol::{MetricKind, Tags};

/// Where a series is aggregated, from the `veneurlocalonly` / `veneurglobalonly` tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// Default: what combines is emitted locally, sketches are forwarded.
    Mixed,
    /// `veneurlocalonly`: never forwarded; everything is computed and emitted by this instance.
    Local,
    /// `veneurglobalonly`: forwarded only; the global emits everything.
    Global,
}

const LOCAL_ONLY: &str = "veneurlocalonly";
const GLOBAL_ONLY: &str = "veneurglobalonly";

/// The configured `extend_tags`, prepared for the hot path.
#[derive(Debug, Clone, Default)]
pub struct ExtendTags {
    tags: Vec<Box<str>>,
    keys: Vec<Box<str>>,
    hash: u64,
}

impl ExtendTags {
    pub fn new(tags: &[String]) -> Self {
        let mut tags: Vec<Box<str>> = tags
            .iter()
            .filter(|t| !t.is_empty())
            .map(|t| t.as_str().into())
            .collect();
        tags.sort();
        tags.dedup();
        let keys = tags.iter().map(|t| tag_key(t).into()).collect();
        let hash = tags.iter().fold(0, |h, t| h ^ tag_hash(t));
        ExtendTags { tags, keys, hash }
    }

    #[inline]
    pub fn overrides(&self, tag: &str) -> bool {
        !self.keys.is_empty() && self.keys.iter().any(|k| **k == *tag_key(tag))
    }

    pub fn tags(&self) -> &[Box<str>] {
        &self.tags
    }
}

/// `key` of `key:value`, or the whole tag when it has no colon.
#[inline]
fn tag_key(tag: &str) -> &str {
    tag.split_once(':').map_or(tag, |(k, _)| k)
}

/// The seed of series-key hashes: random per process. These hashes never leave the process (an importer
/// recomputes them), so a client cannot craft tag sets that collide on purpose.
fn key_seed() -> u64 {
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *SEED.get_or_init(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let local = 0u8;
        xxh3_64(format!("{t}-{}-{:p}", std::process::id(), &local).as_bytes())
    })
}

#[inline]
fn tag_hash(tag: &str) -> u64 {
    xxh3_64_with_seed(tag.as_bytes(), key_seed())
}

/// Tags remembered on the stack for de-duplication; a line with more spills into a hash table.
const DEDUP_SLOTS: usize = 32;

/// Walks the tags of a line as they will be stored, with each tag's hash: empty tags, repeated tags, the scope
/// tags and tags whose key an extend tag overrides are skipped. Returns the scope. Allocates nothing for lines with
/// at most [`DEDUP_SLOTS`] tags; de-duplication is linear in the number of tags either way.
#[inline]
fn walk_tags<'a>(tags: Tags<'a>, extend: &ExtendTags, mut f: impl FnMut(&'a str, u64)) -> Scope {
    let mut scope = None;
    let mut seen: [(u64, &str); DEDUP_SLOTS] = [(0, ""); DEDUP_SLOTS];
    let mut seen_len = 0;
    let mut spill: Option<hashbrown::HashTable<(u64, &'a str)>> = None;
    for tag in tags.iter() {
        if tag.is_empty() {
            continue;
        }
        if tag.len() >= LOCAL_ONLY.len() && (tag == LOCAL_ONLY || tag == GLOBAL_ONLY) {
            // The first scope tag wins, as in Veneur.
            scope.get_or_insert(if tag == LOCAL_ONLY { Scope::Local } else { Scope::Global });
            continue;
        }
        if extend.overrides(tag) {
            continue;
        }
        let hash = tag_hash(tag);
        // Skip repeats: only the first occurrence counts.
        if seen[..seen_len].iter().any(|&(h, t)| h == hash && t == tag) {
            continue;
        }
        if seen_len < DEDUP_SLOTS {
            seen[seen_len] = (hash, tag);
            seen_len += 1;
        } else {
            let table = spill.get_or_insert_with(hashbrown::HashTable::new);
            match table.entry(hash, |&(h, t)| h == hash && t == tag, |&(h, _)| h) {
                hashbrown::hash_table::Entry::Occupied(_) => continue,
                hashbrown::hash_table::Entry::Vacant(v) => {
                    v.insert((hash, tag));
                }
            }
        }
        f(tag, hash);
    }
    scope.unwrap_or(Scope::Mixed)
}

/// The borrowed identity of a line's series, with its hash.
#[derive(Debug, Clone, Copy)]
pub struct KeyView<'a> {
    pub name: &'a str,
    pub kind: MetricKind,
    pub scope: Scope,
    pub tags: Tags<'a>,
    /// Number of distinct stored tags from the line (extend tags not included).
    pub tag_count: usize,
    pub hash: u64,
}

impl<'a> KeyView<'a> {
    #[inline]
    pub fn new(name: &'a str, kind: MetricKind, tags: Tags<'a>, extend: &ExtendTags) -> Self {
        let mut tag_xor = extend.hash;
        let mut tag_count = 0;
        let scope = walk_tags(tags, extend, |_, h| {
            tag_xor ^= h;
            tag_count += 1;
        });
        let hash = key_hash(name, kind, scope, tag_xor);
        KeyView {
            name,
            kind,
            scope,
            tags,
            tag_count,
            hash,
        }
    }

    /// Whether `key` is this series, given this view's canonical tags (from [`Canon::build`]). Allocates nothing.
    #[inline]
    pub fn matches(&self, key: &SeriesKey, canonical_tags: &str) -> bool {
        key.kind == self.kind
            && key.scope == self.scope
            && *key.name == *self.name
            && key.tags.joined() == canonical_tags
    }

    /// The owned key, given this view's canonical tags: the allocations a new series costs (its name and its tags).
    pub fn to_key(&self, canonical_tags: &str, extend: &ExtendTags) -> SeriesKey {
        self.to_key_named(TagSet::from_canonical(canonical_tags), extend, None)
    }

    /// [`KeyView::to_key`], with the canonical tags already made a set (shared with other series, see
    /// [`super::tag_cache`]) and the name's string shared with other series of the name if one is given.
    pub fn to_key_named(&self, tags: TagSet, extend: &ExtendTags, name: Option<SharedStr>) -> SeriesKey {
        debug_assert!(name.as_deref().is_none_or(|n| n == self.name));
        SeriesKey {
            name: name.unwrap_or_else(|| self.name.into()),
            kind: self.kind,
            scope: self.scope,
            tag_count: (self.tag_count + extend.tags.len()) as u32,
            tags,
        }
    }
}

/// Scratch space that turns a line's tags into their canonical text (sorted, distinct, extended), reused from line
/// to line so that it allocates nothing once warm.
#[derive(Debug, Default)]
pub struct Canon {
    /// (from extend tags?, start or index, length) of each tag.
    parts: Vec<(bool, u32, u32)>,
    text: String,
}

impl Canon {
    /// The canonical tag text of `view`: its stored tags and the extend tags, sorted and joined by `,`.
    pub fn build(&mut self, view: &KeyView<'_>, extend: &ExtendTags) -> &str {
        let raw = view.tags.raw();
        let parts = &mut self.parts;
        parts.clear();
        walk_tags(view.tags, extend, |t, _| {
            let start = t.as_ptr() as usize - raw.as_ptr() as usize;
            parts.push((false, start as u32, t.len() as u32));
        });
        parts.extend((0..extend.tags.len()).map(|i| (true, i as u32, 0)));
        let get = |&(from_extend, at, len): &(bool, u32, u32)| -> &str {
            if from_extend {
                &extend.tags[at as usize]
            } else {
                &raw[at as usize..(at + len) as usize]
            }
        };
        parts.sort_unstable_by(|a, b| get(a).cmp(get(b)));
        self.text.clear();
        for (i, p) in parts.iter().enumerate() {
            if i > 0 {
                self.text.push(',');
            }
            self.text.push_str(get(p));
        }
        &self.text
    }
}

/// The 128-bit keyed hash of a line's text identity: its name and everything after its value (type, sample rate,
/// tag block and any other field, exactly as written; see [`crate::protocol::LineView`]). Lines with the same text
/// are the same series with the same type and sample rate, so a shard finds a known series by this hash alone,
/// without parsing the rest of the line, or walking, sorting or even comparing its tags. Two different texts share
/// a hash with probability 2^-128 per pair (about 10^-27 for a million series), and the per-process random seed
/// keeps a sender from crafting a collision; the Datadog agent identifies series by a 64-bit hash. Keys reached by
/// the canonical path are compared in full.
#[inline]
pub fn text_hash(name: &str, suffix: &str) -> u128 {
    let seed = key_seed();
    let n = xxh3_128_with_seed(name.as_bytes(), seed);
    let t = xxh3_128_with_seed(suffix.as_bytes(), seed.rotate_left(32));
    n ^ t.rotate_left(64)
}

/// A final avalanche so that the low bits (shard choice) depend on every input bit.
#[inline]
fn mix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h
}

/// The owned identity of a series. Cloning it copies two reference-counted pointers.
#[derive(Debug, Clone)]
pub struct SeriesKey {
    pub name: SharedStr,
    pub kind: MetricKind,
    pub scope: Scope,
    pub tags: TagSet,
    /// `tags.len()`.
    pub tag_count: u32,
}

impl PartialEq for SeriesKey {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind && self.scope == other.scope && self.name == other.name && self.tags == other.tags
    }
}

impl Eq for SeriesKey {}

impl SeriesKey {
    /// A key from a name and canonical tags (as imported from another instance).
    pub fn new(name: &str, kind: MetricKind, scope: Scope, tags: TagSet) -> Self {
        SeriesKey {
            name: name.into(),
            kind,
            scope,
            tag_count: tags.len() as u32,
            tags,
        }
    }

    /// The same hash as [`KeyView::new`] gives for a line with this key's tags (extend tags included), so that
    /// imported series and series received directly meet in the same shard and entry.
    pub fn hash(&self) -> u64 {
        let tag_xor = self.tags.iter().fold(0, |h, t| h ^ tag_hash(t));
        key_hash(&self.name, self.kind, self.scope, tag_xor)
    }
}

#[inline]
fn key_hash(name: &str, kind: MetricKind, scope: Scope, tag_xor: u64) -> u64 {
    let seed = ((kind as u64) << 8) | scope as u64;
    mix(xxh3_64_with_seed(name.as_bytes(), seed) ^ tag_xor.rotate_left(29))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view<'a>(name: &'a str, tags: &'a str, extend: &ExtendTags) -> KeyView<'a> {
        KeyView::new(name, MetricKind::Counter, Tags::new(tags), extend)
    }

    fn key(v: &KeyView<'_>, e: &ExtendTags) -> SeriesKey {
        let mut canon = Canon::default();
        v.to_key(canon.build(v, e), e)
    }

    fn matches(v: &KeyView<'_>, k: &SeriesKey, e: &ExtendTags) -> bool {
        let mut canon = Canon::default();
        v.matches(k, canon.build(v, e))
    }

    #[test]
    fn tag_order_and_repeats_do_not_change_the_key() {
        let e = ExtendTags::default();
        let a = view("x", "a:1,b:2,c", &e);
        let b = view("x", "c,b:2,a:1,a:1,", &e);
        assert_eq!(a.hash, b.hash);
        assert!(matches(&b, &key(&a, &e), &e));
        assert_eq!(key(&a, &e), key(&b, &e));
    }

    #[test]
    fn name_type_scope_and_tags_each_change_the_key() {
        let e = ExtendTags::default();
        let base = view("x", "a", &e);
        let k = key(&base, &e);
        let others = [
            view("y", "a", &e),
            view("x", "b", &e),
            view("x", "a,b", &e),
            view("x", "", &e),
            view("x", "a,veneurlocalonly", &e),
            KeyView::new("x", MetricKind::Gauge, Tags::new("a"), &e),
        ];
        for other in others {
            assert_ne!(other.hash, base.hash, "{other:?}");
            assert!(!matches(&other, &k, &e), "{other:?}");
        }
    }

    #[test]
    fn scope_tags_are_exact_stripped_and_the_first_wins() {
        let e = ExtendTags::default();
        let v = view("x", "veneurlocalonly,veneurglobalonly,a", &e);
        assert_eq!(v.scope, Scope::Local);
        assert_eq!(key(&v, &e).tags.joined(), "a");
        assert_eq!(view("x", "veneurglobalonly", &e).scope, Scope::Global);
        assert_eq!(view("x", "veneurlocalonlyish", &e).scope, Scope::Mixed);
    }

    #[test]
    fn extend_tags_are_added_and_override_packet_tags_with_the_same_key() {
        let e = ExtendTags::new(&["env:prod".to_string(), "implicit".to_string()]);
        let v = view("x", "env:dev,route:/a", &e);
        let k = key(&v, &e);
        let tags: Vec<&str> = k.tags.iter().collect();
        assert_eq!(tags, vec!["env:prod", "implicit", "route:/a"]);
        assert!(matches(&v, &k, &e));
        assert_eq!(view("x", "route:/a", &e).hash, v.hash);
    }

    #[test]
    fn lines_with_many_tags_deduplicate_past_the_stack_slots() {
        let e = ExtendTags::default();
        let distinct: Vec<String> = (0..100).map(|i| format!("t{i}:v")).collect();
        let plain = distinct.join(",");
        let repeated = format!("{plain},{plain},t5:v");
        let a = view("x", &plain, &e);
        let b = view("x", &repeated, &e);
        assert_eq!((a.tag_count, b.tag_count), (100, 100));
        assert_eq!(a.hash, b.hash);
        assert_eq!(key(&b, &e).tags.len(), 100);
        assert!(matches(&b, &key(&a, &e), &e));
    }

    #[test]
    fn an_imported_key_without_the_extend_tags_is_not_a_local_series() {
        let e = ExtendTags::new(&["x:1".to_string()]);
        let local = view("m", "y:1", &e);
        // A key as imported from elsewhere, with the same number of tags but not the extend tag.
        let imported = SeriesKey::new(
            "m",
            MetricKind::Counter,
            Scope::Mixed,
            TagSet::from_tags(["y:1", "z:1"]),
        );
        assert!(!matches(&local, &imported, &e));
    }

    #[test]
    fn an_owned_key_hashes_like_the_line_it_came_from() {
        let e = ExtendTags::new(&["env:prod".to_string()]);
        for tags in ["", "a", "b:2,a:1,a:1", "env:dev,veneurglobalonly,x"] {
            let v = view("metric.name", tags, &e);
            assert_eq!(key(&v, &e).hash(), v.hash, "{tags:?}");
        }
    }

    #[test]
    fn host_and_device_are_exposed_and_left_out_of_output_tags() {
        let set = TagSet::from_tags(["host:web-1", "device:sda1", "a:b"]);
        assert_eq!(set.host(), Some("web-1"));
        assert_eq!(set.device(), Some("sda1"));
        assert_eq!(set.output().collect::<Vec<_>>(), vec!["a:b"]);
    }
}
