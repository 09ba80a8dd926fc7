//! Aggregation: series keys, per-type state (t-digest histograms, HyperLogLog sets) and the shards that own
//! them. See [`shard`] for the per-shard state and how an interval turns into output.

pub mod admit;
pub mod emit;
pub mod histogram;
pub mod huge_pages;
pub mod key;
pub mod key_index;
pub mod mapper;
pub mod merge;
pub mod names;
pub mod report;
pub mod sample_log;
pub mod set;
pub mod shard;
pub mod tag_cache;
pub mod text_index;

pub use emit::{emit, EmitConfig, EmitCounts};
pub use histogram::{Histogram, Stats};
pub use key::{ExtendTags, KeyView, Scope, SeriesKey, TagSet};
pub use set::Set;
pub use shard::{Dropped, Entry, Interval, ShardState, Taking, Value};
