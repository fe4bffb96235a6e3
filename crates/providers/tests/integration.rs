//! Integration tests of `switchyard-providers` through its public API: the fuzz targets over
//! their corpus, and property tests (the JSON scanner against `serde_json`, translation round
//! trips).

// Modules under `cfg(test)`, so the workspace's `allow-unwrap-in-tests` covers their helpers.
#[cfg(test)]
mod common;
#[cfg(test)]
#[path = "../fuzz/targets.rs"]
mod targets;
#[cfg(test)]
mod tests;
