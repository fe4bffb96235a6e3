//! Integration tests of `switchyard-router` through its public API: property tests of the
//! limiter arithmetic and of the rate-limit header parser, over any numbers.

mod tests;
