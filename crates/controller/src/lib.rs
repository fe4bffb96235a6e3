//! Switchyard's control plane: sources of routing configuration that compile resources into
//! a new routing table and swap it in, off the request path.

pub mod files;

pub use files::{load_path, FileSource, LoadError};
