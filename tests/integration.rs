//! The integration tests, one test binary: each file beside this one is a module (one concern each), and
//! `common/` holds what they share (the test server, intakes, real processes and components).
//!
//! One binary instead of one per file: each file's own binary compiled `common/` and the monomorphised server
//! again and linked ~150 MB, which cost CI more than the tests themselves wait. Three tests keep binaries of
//! their own: `udp_load` (no other test may compete for the CPU while it runs), and `parser_allocations` and
//! `shard_allocations` (each installs a counting global allocator).

mod common;

mod accuracy;
mod binary;
mod capture;
mod controls;
mod datadog;
mod datadog_v2;
mod edge_values;
mod emit;
mod global;
mod global_tier;
mod hostile;
mod otlp;
mod otlp_sink;
mod packaging;
mod prometheus;
mod scrape;
mod server;
mod sketches;
mod tls;
mod top;
mod veneur;
