//! ServiceAccount tokens as caller credentials: a pod presents its projected token (audience
//! `switchyard`) instead of a virtual key, and the gateway asks the API server who it is
//! through a TokenReview.
//!
//! The review itself is behind [`TokenReviewer`], implemented by the cluster source, so the
//! data plane stays free of a Kubernetes client. Verdicts are cached by the token's SHA-256
//! (the token itself is never kept): accepted tokens until they expire, but at most
//! [`MAX_ACCEPTED_TTL`] so a deleted ServiceAccount stops working soon after; refused ones for
//! [`REFUSED_TTL`] so a client retrying a bad token does not turn into a TokenReview flood.
//! Concurrent requests with the same new token share one review.
//!
//! Which consumer a ServiceAccount is, is looked up in the routing table on every request, so
//! removing it from an AIConsumer takes effect at the next reload, cache or not.

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tokio::{sync::OnceCell, time::Instant};

/// The longest an accepted token is trusted without asking again.
pub const MAX_ACCEPTED_TTL: Duration = Duration::from_secs(300);
/// How long a refused token stays refused without asking again.
pub const REFUSED_TTL: Duration = Duration::from_secs(10);
/// Entries kept at most; beyond that expired entries are dropped, then everything.
const MAX_ENTRIES: usize = 10_000;
/// Longest token sent for review: projected tokens are ~1 KiB.
const MAX_TOKEN_LEN: usize = 16 * 1024;

/// What the API server said about a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Review {
    /// Authenticated as this Kubernetes username (`system:serviceaccount:<ns>:<name>`).
    Authenticated(String),
    /// Not authenticated, with the API server's reason.
    Refused(String),
}

/// The review could not be done (API server unreachable, forbidden …).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct ReviewError(pub String);

/// Boxed future of a review.
pub type ReviewFuture = Pin<Box<dyn Future<Output = Result<Review, ReviewError>> + Send>>;

/// Asks the API server about a token (`TokenReview` with the gateway's audience).
pub trait TokenReviewer: Send + Sync + 'static {
    /// Reviews `token`.
    fn review(&self, token: String) -> ReviewFuture;
}

/// Reviews tokens through a [`TokenReviewer`], with a cache.
pub struct ServiceAccountAuth {
    reviewer: Arc<dyn TokenReviewer>,
    cache: Mutex<HashMap<[u8; 32], Arc<Entry>>>,
}

struct Entry {
    verdict: OnceCell<(Review, Instant)>,
}

// === impl ServiceAccountAuth ===

impl ServiceAccountAuth {
    /// Auth through `reviewer`.
    pub fn new(reviewer: Arc<dyn TokenReviewer>) -> Self {
        ServiceAccountAuth {
            reviewer,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `key` could be a ServiceAccount token at all (a JWT), so that a mistyped
    /// virtual key is refused at once instead of being sent to the API server.
    pub fn looks_like_token(key: &[u8]) -> bool {
        key.len() <= MAX_TOKEN_LEN
            && key.starts_with(b"eyJ")
            && key.iter().filter(|&&b| b == b'.').count() == 2
            && key
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'='))
    }

    /// Who `token` belongs to, from the cache or a review.
    pub async fn review(&self, token: &[u8]) -> Result<Review, ReviewError> {
        let digest = switchyard_router::consumer::digest(token);
        let entry = {
            let now = Instant::now();
            let Ok(mut cache) = self.cache.lock() else {
                return Err(ReviewError("token cache unavailable".into()));
            };
            let fresh = cache.get(&digest).filter(|e| match e.verdict.get() {
                Some((_, until)) => *until > now,
                None => true, // a review in flight: share it
            });
            match fresh {
                Some(e) => Arc::clone(e),
                None => {
                    if cache.len() >= MAX_ENTRIES {
                        cache.retain(|_, e| e.verdict.get().is_none_or(|(_, u)| *u > now));
                        if cache.len() >= MAX_ENTRIES {
                            cache.clear();
                        }
                    }
                    let e = Arc::new(Entry {
                        verdict: OnceCell::new(),
                    });
                    cache.insert(digest, Arc::clone(&e));
                    e
                }
            }
        };
        // A failed review leaves the cell empty: the next request asks again.
        let (review, _) = entry
            .verdict
            .get_or_try_init(|| async {
                let text = String::from_utf8_lossy(token).into_owned();
                let review = self.reviewer.review(text).await?;
                let ttl = match &review {
                    Review::Authenticated(_) => {
                        expires_in(token).map_or(MAX_ACCEPTED_TTL, |d| d.min(MAX_ACCEPTED_TTL))
                    }
                    Review::Refused(_) => REFUSED_TTL,
                };
                Ok::<_, ReviewError>((review, Instant::now() + ttl))
            })
            .await?;
        Ok(review.clone())
    }
}

/// Time left before the JWT's `exp` claim. The API server has verified the signature; the
/// claim only bounds how long the verdict is cached.
fn expires_in(token: &[u8]) -> Option<Duration> {
    use base64::Engine as _;
    let payload = token.split(|&b| b == b'.').nth(1)?;
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&json).ok()?;
    let exp = claims.get("exp")?.as_u64()?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
    Some(Duration::from_secs(exp.saturating_sub(now)))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use base64::Engine as _;

    use super::*;

    struct Counting {
        calls: AtomicUsize,
        fail: bool,
    }

    impl TokenReviewer for Counting {
        fn review(&self, token: String) -> ReviewFuture {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let fail = self.fail;
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                if fail {
                    return Err(ReviewError("connection refused".into()));
                }
                Ok(if token.ends_with("good") {
                    Review::Authenticated("system:serviceaccount:a:b".into())
                } else {
                    Review::Refused("invalid bearer token".into())
                })
            })
        }
    }

    fn jwt(exp: u64, sig: &str) -> String {
        let enc = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!(
            "{}.{}.{sig}",
            enc(r#"{"alg":"RS256"}"#),
            enc(&format!(r#"{{"aud":["switchyard"],"exp":{exp}}}"#))
        )
    }

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    #[test]
    fn only_jwts_are_sent_for_review() {
        assert!(ServiceAccountAuth::looks_like_token(
            jwt(1, "good").as_bytes()
        ));
        for key in ["sk-team-a", "eyJabc", "eyJ.a.b.c", "eyJ a.b.c"] {
            assert!(
                !ServiceAccountAuth::looks_like_token(key.as_bytes()),
                "{key}"
            );
        }
    }

    #[test]
    fn expiry_is_read_from_the_claims() {
        let left = expires_in(jwt(now() + 120, "x").as_bytes()).unwrap();
        assert!(left <= Duration::from_secs(120) && left >= Duration::from_secs(100));
        assert_eq!(
            expires_in(jwt(1, "x").as_bytes()),
            Some(Duration::ZERO),
            "expired"
        );
        assert_eq!(expires_in(b"eyJ.!!.x"), None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_requests_share_one_review_and_verdicts_are_cached() {
        let reviewer = Arc::new(Counting {
            calls: AtomicUsize::new(0),
            fail: false,
        });
        let auth = Arc::new(ServiceAccountAuth::new(reviewer.clone()));
        let good = jwt(now() + 3600, "good");
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let (auth, good) = (auth.clone(), good.clone());
            tasks.push(tokio::spawn(
                async move { auth.review(good.as_bytes()).await },
            ));
        }
        for t in tasks {
            assert_eq!(
                t.await.unwrap().unwrap(),
                Review::Authenticated("system:serviceaccount:a:b".into())
            );
        }
        assert_eq!(reviewer.calls.load(Ordering::SeqCst), 1);
        let bad = jwt(now() + 3600, "bad");
        for _ in 0..3 {
            assert!(matches!(
                auth.review(bad.as_bytes()).await,
                Ok(Review::Refused(_))
            ));
        }
        assert_eq!(reviewer.calls.load(Ordering::SeqCst), 2);
        // An expired token is asked about again (and the API server refuses it).
        let expired = jwt(1, "good");
        auth.review(expired.as_bytes()).await.unwrap();
        auth.review(expired.as_bytes()).await.unwrap();
        assert_eq!(reviewer.calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn failed_reviews_are_not_cached() {
        let reviewer = Arc::new(Counting {
            calls: AtomicUsize::new(0),
            fail: true,
        });
        let auth = ServiceAccountAuth::new(reviewer.clone());
        let good = jwt(now() + 3600, "good");
        assert!(auth.review(good.as_bytes()).await.is_err());
        assert!(auth.review(good.as_bytes()).await.is_err());
        assert_eq!(reviewer.calls.load(Ordering::SeqCst), 2);
    }
}
