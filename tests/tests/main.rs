//! The end-to-end tests, one binary (one link, one harness): each module starts the real
//! `switchyard` and `switchyard-mock` binaries on loopback. Run one group with a filter,
//! e.g. `cargo test -p switchyard-e2e kube::`.

mod e2e;
mod kube;
mod resilience;
