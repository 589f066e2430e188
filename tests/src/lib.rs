//! Cross-crate tests of shardlog. The library part holds what both these
//! tests and the cargo-fuzz targets in `fuzz/` run.

pub mod fuzz;

/// Engine settings the cross-crate tests share: no background retention
/// (tests drive it), and small segments and preallocation steps so that a
/// few hundred records roll several segments.
pub fn small_engine_options() -> shardlog_stream::EngineOptions {
    let mut o = shardlog_stream::EngineOptions {
        retention_check_interval_ms: 0,
        ..shardlog_stream::EngineOptions::default()
    };
    o.log.segment_bytes_max = 64 * 1024;
    o.log.preallocate_bytes = 16 * 1024;
    o
}
