//! The shared handle through which the data plane reads the current table.

use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};
use tokio::sync::watch;

use crate::{state::StateRegistry, table::RoutingTable};

/// A key the upstream had refused that a new table no longer holds: its Secret changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplacedKey {
    /// The backend's `namespace/name`.
    pub backend: Arc<str>,
    /// Its provider, the metric label.
    pub provider: &'static str,
}

/// Holds the current [`RoutingTable`]. Producers `store` a whole new table; each request
/// `load`s once (a lock-free pointer read) and keeps that snapshot for its whole life, so a
/// swap never changes a request half-way.
pub struct TableHandle {
    current: ArcSwap<RoutingTable>,
    generation: watch::Sender<u64>,
    state: StateRegistry,
}

impl Default for TableHandle {
    fn default() -> Self {
        Self::new()
    }
}

impl TableHandle {
    /// A handle holding the empty table (generation 0: not ready).
    pub fn new() -> Self {
        TableHandle {
            current: ArcSwap::from_pointee(RoutingTable::default()),
            generation: watch::Sender::new(0),
            state: StateRegistry::default(),
        }
    }

    /// The current table.
    pub fn load(&self) -> Guard<Arc<RoutingTable>> {
        self.current.load()
    }

    /// The current table as an owned `Arc`, for requests that outlive a guard (streams).
    pub fn load_full(&self) -> Arc<RoutingTable> {
        self.current.load_full()
    }

    /// Swaps in a new table and announces its generation. Backends, keys and routes that
    /// existed before keep their health, load, key and budget state.
    ///
    /// Returns the backends of the new table whose refused key a Secret change replaced (one
    /// entry per key), for the producer to log and count.
    pub fn store(&self, table: RoutingTable) -> Vec<ReplacedKey> {
        let replaced = self.state.bind(&table);
        let replaced = replaced
            .into_iter()
            .filter_map(|i| table.backends.get(i))
            .map(|b| ReplacedKey {
                backend: b.name.clone(),
                provider: b.provider.as_str(),
            })
            .collect();
        let generation = table.generation();
        self.current.store(Arc::new(table));
        self.generation.send_replace(generation);
        replaced
    }

    /// True once a table has been loaded.
    pub fn is_ready(&self) -> bool {
        *self.generation.borrow() > 0
    }

    /// Watches the generation, for readiness and for tests that wait for a swap.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }
}
