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
//! Any JWT-shaped string costs a review, so reviews are bounded: each may take
//! [`REVIEW_TIMEOUT`] at most; at most [`MAX_CONCURRENT_REVIEWS`] run at once, and a new token
//! beyond that is answered "busy" at once (never queued, so a flood of made-up tokens cannot
//! pile up requests or API-server calls); and a full cache evicts its least recently used
//! entries rather than forgetting every verdict at once.
//!
//! Which consumer a ServiceAccount is, is looked up in the routing table on every request, so
//! removing it from an AIConsumer takes effect at the next reload, cache or not.

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tokio::{
    sync::{OnceCell, OwnedSemaphorePermit, Semaphore},
    time::Instant,
};

/// The longest an accepted token is trusted without asking again.
pub const MAX_ACCEPTED_TTL: Duration = Duration::from_secs(300);
/// How long a refused token stays refused without asking again.
pub const REFUSED_TTL: Duration = Duration::from_secs(10);
/// The longest one TokenReview may take; then the caller gets a 503.
pub const REVIEW_TIMEOUT: Duration = Duration::from_secs(5);
/// Reviews of tokens not in the cache that may run at once; beyond that, 503 at once.
pub const MAX_CONCURRENT_REVIEWS: usize = 16;
/// Entries kept at most; beyond that expired entries are dropped, then the least recently
/// used [`EVICT_FRACTION`]th.
const MAX_ENTRIES: usize = 10_000;
/// When the cache is full of live entries, 1/this of it (the least recently used) goes at
/// once, so eviction's sort is paid once per that many new tokens, not on each.
const EVICT_FRACTION: usize = 8;
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

/// Why [`ServiceAccountAuth::review`] has no verdict.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReviewFailure {
    /// The reviewer failed.
    #[error(transparent)]
    Failed(#[from] ReviewError),
    /// The reviewer did not answer within the timeout.
    #[error("the TokenReview did not complete within {0:?}")]
    TimedOut(Duration),
    /// Too many reviews of new tokens are running; this one was not started.
    #[error("too many ServiceAccount tokens are being reviewed at once")]
    Busy,
}

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
    /// Permits for reviews of tokens not in the cache.
    reviews: Arc<Semaphore>,
    timeout: Duration,
    max_entries: usize,
    /// Use counter: each hit stamps its entry, so eviction knows the least recently used.
    clock: AtomicU64,
}

struct Entry {
    verdict: OnceCell<(Review, Instant)>,
    last_used: AtomicU64,
}

// === impl ServiceAccountAuth ===

impl ServiceAccountAuth {
    /// Auth through `reviewer`.
    pub fn new(reviewer: Arc<dyn TokenReviewer>) -> Self {
        Self::with_bounds(
            reviewer,
            REVIEW_TIMEOUT,
            MAX_CONCURRENT_REVIEWS,
            MAX_ENTRIES,
        )
    }

    /// Auth through `reviewer` with other bounds than the defaults (tests).
    pub fn with_bounds(
        reviewer: Arc<dyn TokenReviewer>,
        timeout: Duration,
        concurrent_reviews: usize,
        max_entries: usize,
    ) -> Self {
        ServiceAccountAuth {
            reviewer,
            cache: Mutex::new(HashMap::new()),
            reviews: Arc::new(Semaphore::new(concurrent_reviews)),
            timeout,
            max_entries: max_entries.max(1),
            clock: AtomicU64::new(0),
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
    pub async fn review(&self, token: &[u8]) -> Result<Review, ReviewFailure> {
        let digest = switchyard_router::consumer::digest(token);
        let stamp = self.clock.fetch_add(1, Ordering::Relaxed);
        // A new token needs a review permit before it takes a cache slot: when none is free
        // it is refused here, and never displaces a cached verdict.
        let mut permit: Option<OwnedSemaphorePermit> = None;
        let entry = {
            let now = Instant::now();
            let Ok(mut cache) = self.cache.lock() else {
                return Err(ReviewError("token cache unavailable".into()).into());
            };
            let fresh = cache.get(&digest).filter(|e| match e.verdict.get() {
                Some((_, until)) => *until > now,
                None => true, // a review in flight (or failed, to be retried): share it
            });
            match fresh {
                Some(e) => {
                    e.last_used.store(stamp, Ordering::Relaxed);
                    Arc::clone(e)
                }
                None => {
                    permit = Some(
                        Arc::clone(&self.reviews)
                            .try_acquire_owned()
                            .map_err(|_| ReviewFailure::Busy)?,
                    );
                    if cache.len() >= self.max_entries {
                        evict(&mut cache, now, self.max_entries);
                    }
                    let e = Arc::new(Entry {
                        verdict: OnceCell::new(),
                        last_used: AtomicU64::new(stamp),
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
                // Waiters on a review that failed retry it, and need a permit like a new token.
                let _permit = match permit.take() {
                    Some(p) => p,
                    None => Arc::clone(&self.reviews)
                        .try_acquire_owned()
                        .map_err(|_| ReviewFailure::Busy)?,
                };
                let text = String::from_utf8_lossy(token).into_owned();
                let review = tokio::time::timeout(self.timeout, self.reviewer.review(text))
                    .await
                    .map_err(|_| ReviewFailure::TimedOut(self.timeout))??;
                let ttl = match &review {
                    Review::Authenticated(_) => {
                        expires_in(token).map_or(MAX_ACCEPTED_TTL, |d| d.min(MAX_ACCEPTED_TTL))
                    }
                    Review::Refused(_) => REFUSED_TTL,
                };
                Ok::<_, ReviewFailure>((review, Instant::now() + ttl))
            })
            .await?;
        Ok(review.clone())
    }
}

/// Makes room in a full cache: expired verdicts go first; if that is not enough, the least
/// recently used entries, down to 1 - 1/[`EVICT_FRACTION`] of `max`. Entries whose review is
/// in flight may go too: their waiters hold them and still share the answer.
fn evict(cache: &mut HashMap<[u8; 32], Arc<Entry>>, now: Instant, max: usize) {
    cache.retain(|_, e| e.verdict.get().is_none_or(|(_, u)| *u > now));
    if cache.len() < max {
        return;
    }
    let keep = max - (max / EVICT_FRACTION).max(1);
    let mut by_use: Vec<(u64, [u8; 32])> = cache
        .iter()
        .map(|(k, e)| (e.last_used.load(Ordering::Relaxed), *k))
        .collect();
    by_use.sort_unstable();
    for (_, k) in by_use.iter().take(cache.len().saturating_sub(keep)) {
        cache.remove(k);
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

    /// A reviewer that answers only when told to (or never), counting calls.
    struct Gated {
        calls: AtomicUsize,
        release: tokio::sync::Notify,
        never: bool,
    }

    impl Gated {
        fn new(never: bool) -> Arc<Self> {
            Arc::new(Gated {
                calls: AtomicUsize::new(0),
                release: tokio::sync::Notify::new(),
                never,
            })
        }
    }

    impl TokenReviewer for Arc<Gated> {
        fn review(&self, token: String) -> ReviewFuture {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let this = Arc::clone(self);
            Box::pin(async move {
                if this.never {
                    std::future::pending::<()>().await;
                }
                this.release.notified().await;
                Ok(Review::Authenticated(format!(
                    "system:serviceaccount:a:{}",
                    token.len()
                )))
            })
        }
    }

    #[tokio::test]
    async fn a_review_that_hangs_times_out_and_is_asked_again() {
        assert_eq!(REVIEW_TIMEOUT, Duration::from_secs(5));
        let reviewer = Gated::new(true);
        let timeout = Duration::from_millis(100);
        let auth = ServiceAccountAuth::with_bounds(
            Arc::new(reviewer.clone()),
            timeout,
            MAX_CONCURRENT_REVIEWS,
            MAX_ENTRIES,
        );
        let token = jwt(now() + 3600, "slow");
        let started = Instant::now();
        let Err(ReviewFailure::TimedOut(d)) = auth.review(token.as_bytes()).await else {
            panic!("a hanging review must time out")
        };
        assert_eq!(d, timeout);
        assert!(started.elapsed() >= timeout && started.elapsed() < Duration::from_secs(5));
        // Not cached: the next request asks again (and the permit was given back).
        assert!(matches!(
            auth.review(token.as_bytes()).await,
            Err(ReviewFailure::TimedOut(_))
        ));
        assert_eq!(reviewer.calls.load(Ordering::SeqCst), 2);
        assert_eq!(auth.reviews.available_permits(), MAX_CONCURRENT_REVIEWS);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reviews_of_new_tokens_are_limited_never_queued() {
        let reviewer = Gated::new(false);
        let auth = Arc::new(ServiceAccountAuth::with_bounds(
            Arc::new(reviewer.clone()),
            Duration::from_secs(30),
            3,
            100,
        ));
        let tokens: Vec<String> = (0..3)
            .map(|i| jwt(now() + 3600, &format!("t{i}")))
            .collect();
        let mut in_flight = Vec::new();
        for t in &tokens {
            let (auth, t) = (auth.clone(), t.clone());
            in_flight.push(tokio::spawn(async move { auth.review(t.as_bytes()).await }));
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while reviewer.calls.load(Ordering::SeqCst) < 3 {
            assert!(
                std::time::Instant::now() < deadline,
                "reviews did not start"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // A fourth new token is refused at once, without a call to the API server.
        let flood = jwt(now() + 3600, "flood");
        let answered = tokio::time::timeout(Duration::from_secs(1), auth.review(flood.as_bytes()))
            .await
            .expect("an over-limit review must not wait");
        assert!(matches!(answered, Err(ReviewFailure::Busy)), "{answered:?}");
        assert_eq!(reviewer.calls.load(Ordering::SeqCst), 3);
        // A token already under review is no new review: it shares the one in flight.
        let shared = {
            let (auth, t) = (auth.clone(), tokens[0].clone());
            tokio::spawn(async move { auth.review(t.as_bytes()).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!shared.is_finished());
        reviewer.release.notify_waiters();
        for t in in_flight {
            assert!(matches!(t.await.unwrap(), Ok(Review::Authenticated(_))));
        }
        assert!(matches!(
            shared.await.unwrap(),
            Ok(Review::Authenticated(_))
        ));
        assert_eq!(reviewer.calls.load(Ordering::SeqCst), 3);
        // Permits are back: the flood token is reviewed now.
        let again = {
            let (auth, t) = (auth.clone(), flood.clone());
            tokio::spawn(async move { auth.review(t.as_bytes()).await })
        };
        while reviewer.calls.load(Ordering::SeqCst) < 4 {
            assert!(
                std::time::Instant::now() < deadline,
                "the review did not start"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        reviewer.release.notify_waiters();
        assert!(matches!(again.await.unwrap(), Ok(Review::Authenticated(_))));
    }

    #[tokio::test]
    async fn a_full_cache_evicts_the_least_recently_used_not_everything() {
        let reviewer = Arc::new(Counting {
            calls: AtomicUsize::new(0),
            fail: false,
        });
        let auth = ServiceAccountAuth::with_bounds(reviewer.clone(), REVIEW_TIMEOUT, 16, 8);
        let hot = jwt(now() + 3600, "good");
        auth.review(hot.as_bytes()).await.unwrap();
        // Eight distinct other tokens fill the cache past its size, one at a time; the hot
        // token is used between each, so it is never the least recently used.
        for i in 0..8 {
            let cold = jwt(now() + 3600, &format!("cold{i}good"));
            auth.review(cold.as_bytes()).await.unwrap();
            auth.review(hot.as_bytes()).await.unwrap();
        }
        assert_eq!(
            reviewer.calls.load(Ordering::SeqCst),
            9,
            "the hot token was re-reviewed"
        );
        let cache = auth.cache.lock().unwrap();
        assert_eq!(cache.len(), 8);
        assert!(cache.contains_key(&switchyard_router::consumer::digest(hot.as_bytes())));
        // The oldest cold token went first.
        let first_cold = jwt(now() + 3600, "cold0good");
        assert!(!cache.contains_key(&switchyard_router::consumer::digest(first_cold.as_bytes())));
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
