//! Which backend and upstream key produced each stored Responses answer, so that a request
//! continuing it (`previous_response_id`) reaches the one place that holds it.
//!
//! A provider that stores responses keeps them per account (OpenAI: per project, so per
//! key's project; Azure: per resource): sent with another key of a pool, or to the other
//! side of a weighted split, the continuation is answered 400 `previous_response_not_found`.
//! Affinity hashing cannot promise the same place here, because the continuation carries
//! only the new turn and so hashes differently, and because health may have moved the
//! conversation since. So the place is remembered when the answer passes through: in this
//! process (bounded, oldest forgotten first), and with `--redis-url` also in Redis for
//! [`OWNER_TTL`], so every replica finds it. An id found nowhere (never seen, expired,
//! forgotten) is routed as any request, and the provider judges it.

use std::{
    collections::{HashMap, VecDeque},
    hash::BuildHasher,
    sync::{Arc, Mutex},
    time::Duration,
};

use crate::admit::Limits;

/// Owners kept in this process before the oldest is forgotten: about 3 MB when full.
pub(crate) const LOCAL_CAPACITY: usize = 65_536;

/// How long Redis keeps an owner: OpenAI's retention of stored responses (30 days).
pub(crate) const OWNER_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// Where a stored response lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Owner {
    /// The backend's `namespace/name`.
    pub backend: Arc<str>,
    /// [`switchyard_router::UpstreamKey::id`] of the key it was sent with; `None` for a
    /// backend without keys.
    pub key: Option<u64>,
}

impl Owner {
    /// `<key id in hex, or ->:<backend>`: the Redis value.
    fn encode(&self) -> String {
        match self.key {
            Some(k) => format!("{k:016x}:{}", self.backend),
            None => format!("-:{}", self.backend),
        }
    }

    fn decode(v: &str) -> Option<Owner> {
        let (key, backend) = v.split_once(':')?;
        let key = match key {
            "-" => None,
            k => Some(u64::from_str_radix(k, 16).ok()?),
        };
        (!backend.is_empty()).then(|| Owner {
            backend: backend.into(),
            key,
        })
    }
}

/// The owners of stored responses.
pub(crate) struct ResponseOwners {
    local: Mutex<Local>,
    capacity: usize,
    hasher: foldhash::fast::RandomState,
    shared: Arc<Limits>,
}

/// Keyed by a hash of the response id (ids are long; a collision among the kept ones would
/// at worst send one continuation where the provider answers "not found").
#[derive(Default)]
struct Local {
    owners: HashMap<u64, Owner>,
    order: VecDeque<u64>,
}

impl ResponseOwners {
    /// Owners kept here (up to `capacity`) and, when `shared` has Redis, there.
    pub(crate) fn new(shared: Arc<Limits>, capacity: usize) -> Self {
        ResponseOwners {
            local: Mutex::new(Local::default()),
            capacity: capacity.max(1),
            hasher: foldhash::fast::RandomState::default(),
            shared,
        }
    }

    fn redis_key(id: &str) -> String {
        format!("sy:resp:{id}")
    }

    /// Notes that `owner` produced the stored response `id`, here at once and in Redis in
    /// the background: for a stream, whose id is known from its first event, long before
    /// the caller can ask to continue it.
    pub(crate) fn remember(self: &Arc<Self>, id: &str, owner: Owner) {
        if self.remember_here(id, &owner) {
            let this = Arc::clone(self);
            let id = id.to_string();
            tokio::spawn(async move { this.remember_shared(&id, &owner).await });
        }
    }

    /// [`ResponseOwners::remember`], waiting for Redis: for an answer whose id is known only
    /// as it is about to be returned, so that no replica can be asked to continue it first.
    pub(crate) async fn remember_before_answering(&self, id: &str, owner: Owner) {
        if self.remember_here(id, &owner) {
            self.remember_shared(id, &owner).await;
        }
    }

    /// The local half; whether Redis should be told too.
    fn remember_here(&self, id: &str, owner: &Owner) -> bool {
        if id.is_empty() {
            return false;
        }
        let h = self.hasher.hash_one(id);
        let mut local = self.local.lock().unwrap_or_else(|e| e.into_inner());
        if local.owners.insert(h, owner.clone()).is_none() {
            local.order.push_back(h);
        }
        while local.order.len() > self.capacity {
            if let Some(old) = local.order.pop_front() {
                local.owners.remove(&old);
            }
        }
        self.shared.is_shared()
    }

    async fn remember_shared(&self, id: &str, owner: &Owner) {
        self.shared
            .shared_put(&Self::redis_key(id), &owner.encode(), OWNER_TTL)
            .await;
    }

    /// The owner of the stored response `id`: from this process, else from Redis (one
    /// round trip, only for an id this replica has not seen).
    pub(crate) async fn owner(&self, id: &str) -> Option<Owner> {
        let h = self.hasher.hash_one(id);
        let found = {
            let local = self.local.lock().unwrap_or_else(|e| e.into_inner());
            local.owners.get(&h).cloned()
        };
        if found.is_some() || !self.shared.is_shared() {
            return found;
        }
        let v = self.shared.shared_get(&Self::redis_key(id)).await?;
        Owner::decode(&v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owners(capacity: usize) -> ResponseOwners {
        let metrics = Arc::new(
            switchyard_telemetry::Metrics::new(prometheus::Registry::new()).expect("metrics"),
        );
        ResponseOwners::new(Arc::new(Limits::local(metrics)), capacity)
    }

    fn owner(backend: &str, key: Option<u64>) -> Owner {
        Owner {
            backend: backend.into(),
            key,
        }
    }

    #[test]
    fn the_redis_value_round_trips() {
        for o in [owner("ns/oai", Some(0xdead_beef)), owner("ns/a:b", None)] {
            assert_eq!(Owner::decode(&o.encode()), Some(o));
        }
        assert_eq!(Owner::decode("zz:ns/oai"), None);
        assert_eq!(Owner::decode("-:"), None);
        assert_eq!(Owner::decode("no-colon"), None);
    }

    #[tokio::test]
    async fn remembered_until_the_capacity_forgets_the_oldest() {
        let o = Arc::new(owners(2));
        o.remember("resp_1", owner("ns/a", Some(1)));
        o.remember("resp_2", owner("ns/b", Some(2)));
        assert_eq!(o.owner("resp_1").await, Some(owner("ns/a", Some(1))));
        o.remember("resp_3", owner("ns/a", None));
        assert_eq!(o.owner("resp_1").await, None);
        assert_eq!(o.owner("resp_2").await, Some(owner("ns/b", Some(2))));
        assert_eq!(o.owner("resp_3").await, Some(owner("ns/a", None)));
        assert_eq!(o.owner("resp_unknown").await, None);
    }
}
