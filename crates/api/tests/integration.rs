//! Integration tests of `switchyard-api` through its public API: property tests of the
//! duration and price parsers (an upstream's `x-ratelimit-reset-*` header reaches
//! `parse_duration` too).

mod tests;
