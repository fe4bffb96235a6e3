//! Shared by the integration tests: the fuzz corpus runner and the generators of the
//! property tests.

pub mod fuzz;
pub mod gen;

use proptest::test_runner::{Config, FileFailurePersistence};

/// The property tests' settings: the defaults (256 cases, or `PROPTEST_CASES`, which `make
/// fuzz` raises), with failures kept beside the test file (`<file>.proptest-regressions`,
/// to check in) and replayed first on every run.
pub fn proptest_config() -> Config {
    Config {
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..Config::default()
    }
}
