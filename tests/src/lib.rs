//! Cross-crate tests of shardlog. The library part holds what both these
//! tests and the cargo-fuzz targets in `fuzz/` run.

pub mod fuzz;
