//! The request's conversation key for prompt-cache affinity (see
//! [`switchyard_providers::affinity`] and the AIRoute `affinity` field): computed once per
//! request from what the inbound decode already split, and used to order the route's
//! targets and to choose the upstream key by weighted rendezvous hashing.

use http::{HeaderMap, HeaderName};
use switchyard_providers::affinity::{from_explicit, from_fields, Source};
use switchyard_router::Affinity;

use crate::{inbound::Inbound, owners::Owner};

/// Where a request should go to be served well, or at all.
#[derive(Debug, Default)]
pub(crate) struct Sticky {
    /// The conversation key: targets and keys in rendezvous order, for a warm prompt cache.
    pub key: Option<u64>,
    /// The backend and key that stored the response this request continues: the only
    /// place that can serve it (see [`crate::owners`]).
    pub owner: Option<Owner>,
}

/// The header a caller names its conversation with; it wins over anything in the body.
/// Never sent upstream (no caller header is).
pub(crate) static AFFINITY_HEADER: HeaderName = HeaderName::from_static("x-switchyard-affinity");

/// The conversation key of a request on a route with `mode`; `None` for no affinity.
pub(crate) fn key(decoded: &Inbound<'_>, headers: &HeaderMap, mode: Affinity) -> Option<u64> {
    let source = match mode {
        Affinity::None => return None,
        Affinity::Session => Source::Session,
        Affinity::Prefix => Source::Prefix,
    };
    if let Some(h) = headers
        .get(&AFFINITY_HEADER)
        .and_then(|v| from_explicit(v.as_bytes()))
    {
        return Some(h);
    }
    match decoded {
        Inbound::OpenAi { req, .. } | Inbound::Responses { req, .. } => {
            from_fields(req.raw_fields(), source)
        }
        Inbound::Anthropic { req, .. } => from_fields(req.raw_fields(), source),
    }
}
