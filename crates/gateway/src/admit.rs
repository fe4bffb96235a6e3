//! Admission by consumer limits: requests and tokens per minute, and a spending budget per
//! period. Counters live in this process, or in Redis (`--redis-url`) so that limits hold
//! across replicas.
//!
//! Tokens are reserved before the request from an estimate (prompt size and `max_tokens`)
//! and corrected with the real usage afterwards, so long completions cannot burst far past
//! the limit. Spend is added when usage is known and checked before the next request.
//!
//! Redis being away never stops the gateway: an unreachable Redis at start-up is connected
//! in the background with back-off, and a circuit breaker ([`Breaker`]) skips Redis for a
//! short cool-down after a failure, so requests get the failure mode's answer at once instead
//! of each waiting out a timeout; a background probe closes it when Redis answers again.
//!
//! Every number that comes from a client (`max_tokens`) or an upstream (usage) is added with
//! saturation, and clamped to what Redis's signed 64-bit integers hold before it is sent there.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, OnceLock,
    },
    time::Duration,
};

use redis::{aio::ConnectionManager, Script};
use switchyard_providers::Usage;
use switchyard_router::{
    state::{budget_period, LedgerEntry, LimitExceeded, Taken, WindowStatus, LIMIT_WINDOW_MS},
    Consumer, ConsumerState,
};
use switchyard_telemetry::Metrics;

/// What to do when the shared counter store cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureMode {
    /// Admit the request (limits are not enforced while Redis is away).
    Open,
    /// Refuse with 503 until Redis is back.
    Closed,
}

/// The clock limits run on: injectable so tests can move across windows and budget periods.
pub trait Clock: Send + Sync {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// The system clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }
}

/// Why a consumer's request was refused.
#[derive(Debug, Clone)]
pub enum Refusal {
    /// Requests or tokens per minute.
    Limit(LimitExceeded),
    /// The period's budget is spent.
    Budget {
        /// The cap in USD.
        cap_usd: f64,
        /// Until the period ends.
        reset: Duration,
    },
    /// The counter store is unreachable and the failure mode is closed.
    Unavailable,
}

/// What admission charged, to be settled when usage is known.
#[derive(Debug, Clone, Copy, Default)]
pub struct Admitted {
    /// Windows charged.
    pub taken: Taken,
}

/// Admission control over the consumers' limits.
pub struct Limits {
    redis: Option<Arc<RedisStore>>,
    failure_mode: FailureMode,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
}

/// How long each Redis call may take before it counts as a failure.
const REDIS_TIMEOUT: Duration = Duration::from_millis(500);
/// How long Redis is skipped after a failure before a background probe asks again.
const BREAKER_COOL_DOWN: Duration = Duration::from_secs(1);
/// Back-off of the background connection at start-up: first and longest wait.
const CONNECT_BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(2));

struct RedisStore {
    client: redis::Client,
    /// Set once the first connection is made; the manager reconnects by itself after that.
    conn: OnceLock<ConnectionManager>,
    take: Script,
    timeout: Duration,
    breaker: Breaker,
}

/// Why a Redis call gave no answer.
#[derive(Debug)]
enum StoreError {
    /// Not tried: the breaker is open (or the first connection is still being made).
    Skipped,
    /// Tried and failed.
    Redis(redis::RedisError),
}

/// A circuit breaker in front of Redis. Closed, every call goes to Redis. A failure opens it
/// for a cool-down during which calls are not made at all (the failure mode applies at once);
/// after the cool-down the first call to notice starts one background probe, and the breaker
/// closes when the probe succeeds (or opens for another cool-down when it fails). Calls never
/// wait for the probe. Times are in milliseconds on any monotonic clock.
#[derive(Debug)]
pub(crate) struct Breaker {
    /// Until when calls are skipped; 0 = closed.
    open_until: AtomicU64,
    /// A probe (or the start-up connection) is running.
    probing: AtomicBool,
    cool_down_ms: u64,
}

/// What the breaker says about one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Gate {
    /// Call Redis.
    Pass,
    /// Skip Redis.
    Skip,
    /// Skip Redis, and start the probe: this caller won the right to.
    SkipAndProbe,
}

/// Lua: check both sliding windows and charge them in one atomic step, so replicas sharing
/// Redis never admit past the limit together.
const TAKE_SCRIPT: &str = r"
local rp = tonumber(redis.call('GET', KEYS[1]) or '0')
local rc = tonumber(redis.call('GET', KEYS[2]) or '0')
local tp = tonumber(redis.call('GET', KEYS[3]) or '0')
local tc = tonumber(redis.call('GET', KEYS[4]) or '0')
local overlap = tonumber(ARGV[1])
local rl = tonumber(ARGV[2])
local tl = tonumber(ARGV[3])
local n = tonumber(ARGV[4])
local ru = math.floor(rp * overlap / 60000) + rc
local tu = math.floor(tp * overlap / 60000) + tc
if rl >= 0 and ru + 1 > rl then return {1, ru, tu} end
if tl >= 0 and tu > 0 and tu + n > tl then return {2, ru, tu} end
redis.call('INCRBY', KEYS[2], 1)
redis.call('PEXPIRE', KEYS[2], ARGV[5])
redis.call('INCRBY', KEYS[4], n)
redis.call('PEXPIRE', KEYS[4], ARGV[5])
return {0, ru + 1, tu + n}
";

impl Limits {
    /// Limits kept in this process.
    pub fn local(metrics: Arc<Metrics>) -> Self {
        Limits {
            redis: None,
            failure_mode: FailureMode::Open,
            clock: Arc::new(SystemClock),
            metrics,
        }
    }

    /// Limits shared through Redis. Only a malformed URL is an error: when Redis cannot be
    /// reached at start-up the gateway serves per `failure_mode` while a background task
    /// connects with back-off. Must be called within a Tokio runtime.
    pub async fn redis(
        url: &str,
        failure_mode: FailureMode,
        metrics: Arc<Metrics>,
    ) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let store = Arc::new(RedisStore {
            client,
            conn: OnceLock::new(),
            take: Script::new(TAKE_SCRIPT),
            timeout: REDIS_TIMEOUT,
            breaker: Breaker::new(BREAKER_COOL_DOWN),
        });
        // One attempt now, so a healthy Redis is in use from the first request.
        if let Err(e) = store.connect().await {
            tracing::warn!(
                error = %e,
                mode = ?failure_mode,
                "limit counters unreachable at start-up: serving per the failure mode, connecting in the background"
            );
            store
                .breaker
                .start_probe(switchyard_router::state::now_ms());
            tokio::spawn(Arc::clone(&store).connect_in_background());
        }
        Ok(Limits {
            redis: Some(store),
            failure_mode,
            clock: Arc::new(SystemClock),
            metrics,
        })
    }

    /// Replaces the clock (tests).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Whether counters are shared through Redis.
    pub fn is_shared(&self) -> bool {
        self.redis.is_some()
    }

    /// Checks and charges `consumer`'s limits for one request estimated at `tokens`.
    pub async fn admit(&self, consumer: &Consumer, tokens: u64) -> Result<Admitted, Refusal> {
        if !consumer.is_limited() {
            return Ok(Admitted::default());
        }
        // The estimate holds the client's `max_tokens`: reserve at most what Redis's signed
        // counters hold, the same figure here and there, so settling subtracts what was added.
        let tokens = tokens.min(i64::MAX as u64);
        let now = self.clock.now_ms();
        if let Some(b) = consumer.budget {
            let (_, period, end) = budget_period(now, b.period);
            let spent = match &self.redis {
                None => Ok(consumer.state().spend(period)),
                Some(r) => r.spend(&consumer.name, period).await,
            };
            match spent {
                Ok(spent) if spent >= b.micro_usd => {
                    return Err(Refusal::Budget {
                        cap_usd: b.micro_usd as f64 / 1e6,
                        reset: Duration::from_millis(end.saturating_sub(now)),
                    })
                }
                Ok(_) => {}
                Err(e) => self.store_failed(&e)?,
            }
        }
        let (rpm, tpm) = (consumer.requests_per_minute, consumer.tokens_per_minute);
        if rpm.is_none() && tpm.is_none() {
            return Ok(Admitted::default());
        }
        let taken = match &self.redis {
            None => consumer.state().try_take(now, rpm, tpm, tokens),
            Some(r) => match r.take(&consumer.name, now, rpm, tpm, tokens).await {
                Ok(t) => t,
                Err(e) => {
                    self.store_failed(&e)?;
                    return Ok(Admitted::default());
                }
            },
        };
        match taken {
            Ok(taken) => Ok(Admitted { taken }),
            Err(e) => Err(Refusal::Limit(e)),
        }
    }

    fn store_failed(&self, e: &StoreError) -> Result<(), Refusal> {
        self.metrics.limits_store_errors.inc();
        // Outages are logged when the breaker opens (once per outage, not per request).
        if let StoreError::Redis(e) = e {
            tracing::debug!(error = %e, mode = ?self.failure_mode, "limit counters unreachable");
        }
        match self.failure_mode {
            FailureMode::Open => Ok(()),
            FailureMode::Closed => Err(Refusal::Unavailable),
        }
    }

    /// Settles a request once usage is known: corrects the token reservation, adds spend,
    /// and updates the ledger. Redis updates run in the background.
    pub fn settle(
        self: &Arc<Self>,
        consumer: SettleTarget,
        admitted: Admitted,
        usage: Option<Usage>,
        micro_usd: u64,
    ) {
        let now = self.clock.now_ms();
        let u = usage.unwrap_or_default();
        let entry = LedgerEntry {
            requests: 1,
            input_tokens: u.input_tokens,
            output_tokens: u.output_tokens,
            cached_input_tokens: u.cached_input_tokens,
            micro_usd,
        };
        let (day, period, _) = budget_period(now, consumer.period);
        let actual = u.input_tokens.saturating_add(u.output_tokens);
        // The local ledger is always kept: it backs /debug/spend without Redis. A request
        // that got no answer is only un-reserved, not billed.
        if usage.is_some() {
            consumer.state.record(period, day, &consumer.model, entry);
        }
        match &self.redis {
            None => {
                if admitted.taken.tokens > 0 || consumer.tokens_limited {
                    consumer.state.settle_tokens(&admitted.taken, actual);
                }
            }
            Some(_) => {
                let this = Arc::clone(self);
                tokio::spawn(async move {
                    if let Some(r) = &this.redis {
                        let delta = token_delta(actual, admitted.taken.tokens);
                        let entry = usage.map(|_| entry);
                        let res = r
                            .settle(&consumer, admitted.taken.window, delta, period, day, entry)
                            .await;
                        match res {
                            Ok(()) => {}
                            Err(StoreError::Skipped) => this.metrics.limits_store_errors.inc(),
                            Err(StoreError::Redis(e)) => {
                                this.metrics.limits_store_errors.inc();
                                tracing::debug!(error = %e, "settling usage in Redis failed");
                            }
                        }
                    }
                });
            }
        }
    }

    /// Spend so far in `consumer`'s current budget period, in micro-USD: this replica's, or
    /// the shared figure from Redis. `None` without a budget or when Redis cannot be read.
    pub async fn period_spend(&self, consumer: &Consumer) -> Option<u64> {
        let b = consumer.budget?;
        let (_, period, _) = budget_period(self.clock.now_ms(), b.period);
        match &self.redis {
            None => Some(consumer.state().spend(period)),
            Some(r) => r.spend(&consumer.name, period).await.ok(),
        }
    }

    /// Per-consumer ledger for `/debug/spend`: this replica's, or the shared one from Redis.
    pub async fn ledger(
        &self,
        consumers: Vec<(Arc<str>, Arc<ConsumerState>)>,
    ) -> serde_json::Value {
        let now = self.clock.now_ms();
        let today = now / 86_400_000;
        let mut out = Vec::new();
        for (name, state) in consumers {
            let rows: Vec<serde_json::Value> = match &self.redis {
                Some(r) => match r.ledger(&name, today).await {
                    Ok(rows) => rows,
                    Err(StoreError::Skipped) => vec![serde_json::json!({
                        "error": "Redis is unreachable (reconnecting in the background)"
                    })],
                    Err(StoreError::Redis(e)) => {
                        vec![serde_json::json!({"error": format!("reading Redis failed: {e}")})]
                    }
                },
                None => state
                    .ledger()
                    .into_iter()
                    .map(|(day, model, e)| ledger_row(day, &model, &e))
                    .collect(),
            };
            out.push(serde_json::json!({"consumer": &*name, "days": rows}));
        }
        serde_json::json!({
            "store": if self.is_shared() { "redis" } else { "memory" },
            "consumers": out,
        })
    }
}

fn ledger_row(day: u64, model: &str, e: &LedgerEntry) -> serde_json::Value {
    serde_json::json!({
        "day": day_string(day),
        "model": model,
        "requests": e.requests,
        "inputTokens": e.input_tokens,
        "outputTokens": e.output_tokens,
        "cachedInputTokens": e.cached_input_tokens,
        "usd": e.micro_usd as f64 / 1e6,
    })
}

/// `YYYY-MM-DD` for a day number since the epoch.
fn day_string(day: u64) -> String {
    let z = day as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// What settling needs about the consumer, owned (it may outlive the routing table).
pub struct SettleTarget {
    /// `namespace/name`.
    pub name: Arc<str>,
    /// Its state.
    pub state: Arc<ConsumerState>,
    /// The budget period.
    pub period: switchyard_router::consumer::BudgetPeriod,
    /// Whether a token limit applies.
    pub tokens_limited: bool,
    /// The model label the request was routed by.
    pub model: Arc<str>,
}

impl SettleTarget {
    /// Builds the settle target for `consumer`.
    pub fn new(consumer: &Consumer, model: Arc<str>) -> Self {
        SettleTarget {
            name: consumer.name.clone(),
            state: consumer.state().clone(),
            period: consumer.budget.map_or(Default::default(), |b| b.period),
            tokens_limited: consumer.tokens_per_minute.is_some(),
            model,
        }
    }
}

/// The signed 64-bit integer Redis stores, saturating: counters never wrap or get refused.
fn redis_int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Real minus reserved tokens, as the signed correction for Redis, without overflow.
fn token_delta(actual: u64, reserved: u64) -> i64 {
    let d = i128::from(actual) - i128::from(reserved);
    i64::try_from(d).unwrap_or(if d < 0 { i64::MIN } else { i64::MAX })
}

// === impl Breaker ===

impl Breaker {
    pub(crate) fn new(cool_down: Duration) -> Self {
        Breaker {
            open_until: AtomicU64::new(0),
            probing: AtomicBool::new(false),
            cool_down_ms: u64::try_from(cool_down.as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// Whether a call at `now` goes to Redis.
    pub(crate) fn check(&self, now: u64) -> Gate {
        let until = self.open_until.load(Ordering::Acquire);
        if until == 0 {
            return Gate::Pass;
        }
        if now < until {
            return Gate::Skip;
        }
        match self
            .probing
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => Gate::SkipAndProbe,
            Err(_) => Gate::Skip,
        }
    }

    /// Notes a failed call at `now`: skip Redis for a cool-down. True when this opened a
    /// closed breaker (the start of an outage, worth one log line).
    pub(crate) fn trip(&self, now: u64) -> bool {
        let until = now.saturating_add(self.cool_down_ms).max(1);
        self.open_until.swap(until, Ordering::AcqRel) == 0
    }

    /// Opens the breaker with a probe already running (the start-up connection).
    pub(crate) fn start_probe(&self, now: u64) {
        self.probing.store(true, Ordering::Release);
        self.trip(now);
    }

    /// The probe's verdict: closed again, or another cool-down.
    pub(crate) fn probe_done(&self, ok: bool, now: u64) {
        if ok {
            self.open_until.store(0, Ordering::Release);
        } else {
            self.trip(now);
        }
        self.probing.store(false, Ordering::Release);
    }
}

// === impl RedisStore ===

impl RedisStore {
    /// Makes the first connection (the manager reconnects by itself afterwards).
    async fn connect(&self) -> redis::RedisResult<()> {
        if self.conn.get().is_some() {
            return Ok(());
        }
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(self.timeout)
            .set_response_timeout(self.timeout)
            .set_number_of_retries(1);
        let conn = self
            .with_timeout(ConnectionManager::new_with_config(
                self.client.clone(),
                config,
            ))
            .await?;
        let _ = self.conn.set(conn);
        Ok(())
    }

    /// Start-up with Redis away: retries the first connection with doubling back-off until it
    /// is made, then closes the breaker.
    async fn connect_in_background(self: Arc<Self>) {
        let mut wait = CONNECT_BACKOFF.0;
        loop {
            tokio::time::sleep(wait).await;
            match self.connect().await {
                Ok(()) => {
                    tracing::info!("limit counters reachable: connected to Redis");
                    self.breaker
                        .probe_done(true, switchyard_router::state::now_ms());
                    return;
                }
                Err(e) => {
                    tracing::debug!(error = %e, retry_in = ?wait, "connecting to Redis failed");
                    wait = (wait * 2).min(CONNECT_BACKOFF.1);
                }
            }
        }
    }

    /// After a cool-down: one PING decides whether the breaker closes.
    async fn probe(self: Arc<Self>) {
        let ok = match self.conn.get() {
            Some(conn) => {
                let mut conn = conn.clone();
                self.with_timeout(redis::cmd("PING").query_async::<()>(&mut conn))
                    .await
                    .is_ok()
            }
            None => self.connect().await.is_ok(),
        };
        self.breaker
            .probe_done(ok, switchyard_router::state::now_ms());
        if ok {
            tracing::info!("limit counters reachable again: using Redis");
        }
    }

    /// The connection to use for one call, or `Skipped` while the breaker is open.
    fn conn(self: &Arc<Self>) -> Result<ConnectionManager, StoreError> {
        match self.breaker.check(switchyard_router::state::now_ms()) {
            Gate::Pass => self.conn.get().cloned().ok_or(StoreError::Skipped),
            Gate::Skip => Err(StoreError::Skipped),
            Gate::SkipAndProbe => {
                tokio::spawn(Arc::clone(self).probe());
                Err(StoreError::Skipped)
            }
        }
    }

    /// Notes the outcome of a call: a failure to reach Redis opens the breaker. An error
    /// Redis itself answered (a reachable Redis) does not.
    fn outcome<T>(&self, r: redis::RedisResult<T>) -> Result<T, StoreError> {
        r.map_err(|e| {
            if (e.is_io_error() || e.is_unrecoverable_error())
                && self.breaker.trip(switchyard_router::state::now_ms())
            {
                tracing::warn!(
                    error = %e,
                    cool_down = ?BREAKER_COOL_DOWN,
                    "limit counters unreachable: skipping Redis until a probe succeeds"
                );
            }
            StoreError::Redis(e)
        })
    }

    async fn with_timeout<T>(
        &self,
        fut: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> redis::RedisResult<T> {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(redis::RedisError::from((
                redis::ErrorKind::IoError,
                "Redis did not answer in time",
            ))),
        }
    }

    async fn spend(self: &Arc<Self>, consumer: &str, period: u64) -> Result<u64, StoreError> {
        let mut conn = self.conn()?;
        let key = format!("sy:spend:{consumer}:{period}");
        let v: Option<u64> = self.outcome(
            self.with_timeout(redis::cmd("GET").arg(&key).query_async(&mut conn))
                .await,
        )?;
        Ok(v.unwrap_or(0))
    }

    async fn take(
        self: &Arc<Self>,
        consumer: &str,
        now: u64,
        rpm: Option<u64>,
        tpm: Option<u64>,
        tokens: u64,
    ) -> Result<Result<Taken, LimitExceeded>, StoreError> {
        let mut conn = self.conn()?;
        let window = now / LIMIT_WINDOW_MS;
        let into = now % LIMIT_WINDOW_MS;
        let overlap = LIMIT_WINDOW_MS - into;
        let reset = Duration::from_millis(overlap);
        let key = |kind: &str, w: u64| format!("sy:rl:{kind}:{consumer}:{w}");
        let mut inv = self.take.prepare_invoke();
        inv.key(key("r", window.saturating_sub(1)))
            .key(key("r", window))
            .key(key("t", window.saturating_sub(1)))
            .key(key("t", window))
            .arg(overlap)
            .arg(rpm.map_or(-1, redis_int))
            .arg(tpm.map_or(-1, redis_int))
            .arg(redis_int(tokens))
            .arg(2 * LIMIT_WINDOW_MS + 5_000);
        let (verdict, req_used, tok_used): (u8, u64, u64) =
            self.outcome(self.with_timeout(inv.invoke_async(&mut conn)).await)?;
        let status = |limit: u64, used: u64| WindowStatus {
            limit,
            remaining: limit.saturating_sub(used),
            reset,
        };
        Ok(match verdict {
            1 => Err(LimitExceeded::Requests(status(rpm.unwrap_or(0), req_used))),
            2 => Err(LimitExceeded::Tokens(status(tpm.unwrap_or(0), tok_used))),
            _ => Ok(Taken {
                window,
                tokens,
                requests: rpm.map(|l| status(l, req_used)),
                token_status: tpm.map(|l| status(l, tok_used)),
            }),
        })
    }

    async fn settle(
        self: &Arc<Self>,
        c: &SettleTarget,
        window: u64,
        token_delta: i64,
        period: u64,
        day: u64,
        e: Option<LedgerEntry>,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let mut pipe = redis::pipe();
        if c.tokens_limited && token_delta != 0 && window != 0 {
            pipe.cmd("INCRBY")
                .arg(format!("sy:rl:t:{}:{window}", c.name))
                .arg(token_delta)
                .ignore();
        }
        let Some(e) = e else {
            return self.outcome(self.with_timeout(pipe.query_async::<()>(&mut conn)).await);
        };
        let spend_key = format!("sy:spend:{}:{period}", c.name);
        pipe.cmd("INCRBY")
            .arg(&spend_key)
            .arg(redis_int(e.micro_usd))
            .ignore();
        pipe.cmd("EXPIRE").arg(&spend_key).arg(40 * 86_400).ignore();
        let ledger_key = format!("sy:ledger:{}:{day}", c.name);
        for (field, n) in [
            ("requests", e.requests),
            ("input", e.input_tokens),
            ("output", e.output_tokens),
            ("cached", e.cached_input_tokens),
            ("micro_usd", e.micro_usd),
        ] {
            pipe.cmd("HINCRBY")
                .arg(&ledger_key)
                .arg(format!("{}|{field}", c.model))
                .arg(redis_int(n))
                .ignore();
        }
        pipe.cmd("EXPIRE")
            .arg(&ledger_key)
            .arg(70 * 86_400)
            .ignore();
        self.outcome(self.with_timeout(pipe.query_async::<()>(&mut conn)).await)
    }

    async fn ledger(
        self: &Arc<Self>,
        consumer: &str,
        today: u64,
    ) -> Result<Vec<serde_json::Value>, StoreError> {
        let mut conn = self.conn()?;
        let mut rows = Vec::new();
        for day in today.saturating_sub(31)..=today {
            let fields: Vec<(String, u64)> = self.outcome(
                self.with_timeout(
                    redis::cmd("HGETALL")
                        .arg(format!("sy:ledger:{consumer}:{day}"))
                        .query_async(&mut conn),
                )
                .await,
            )?;
            let mut by_model: std::collections::BTreeMap<String, LedgerEntry> = Default::default();
            for (field, n) in fields {
                let Some((model, what)) = field.rsplit_once('|') else {
                    continue;
                };
                let e = by_model.entry(model.to_string()).or_default();
                match what {
                    "requests" => e.requests = n,
                    "input" => e.input_tokens = n,
                    "output" => e.output_tokens = n,
                    "cached" => e.cached_input_tokens = n,
                    "micro_usd" => e.micro_usd = n,
                    _ => {}
                }
            }
            rows.extend(by_model.iter().map(|(m, e)| ledger_row(day, m, e)));
        }
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    struct FakeClock(AtomicU64);

    impl Clock for FakeClock {
        fn now_ms(&self) -> u64 {
            self.0.load(Ordering::Relaxed)
        }
    }

    fn table(yaml: &str) -> switchyard_router::RoutingTable {
        let mut r = switchyard_api::Resources::default();
        let errs = r.parse_yaml(
            "t.yaml",
            yaml,
            &std::collections::HashMap::<String, String>::new(),
        );
        assert!(errs.is_empty(), "{errs:?}");
        let c = switchyard_router::compile(&r, 1);
        assert!(!c.has_errors(), "{:?}", c.diagnostics);
        c.table
    }

    const CONSUMER: &str = "apiVersion: v1\nkind: Secret\nmetadata: {name: k}\nstringData: {k: sk-1}\n---\napiVersion: switchyard.dev/v1alpha1\nkind: AIConsumer\nmetadata: {name: c}\nspec:\n  keySecretRef: {name: k, key: k}\n  budget: {usd: \"1.00\", period: day}\n  limits: {requestsPerMinute: 100}\n";

    #[tokio::test]
    async fn budget_refuses_until_the_next_period() {
        let t = table(CONSUMER);
        let consumer = t.consumers().iter().next().unwrap();
        let metrics = Arc::new(Metrics::new(prometheus::Registry::new()).unwrap());
        // 2026-11-24T12:00:00Z.
        let noon = 20_781 * 86_400_000 + 12 * 3_600_000;
        let clock = Arc::new(FakeClock(AtomicU64::new(noon)));
        let limits = Arc::new(Limits::local(metrics).with_clock(clock.clone()));
        let admitted = limits.admit(consumer, 10).await.unwrap();
        let usage = Usage {
            input_tokens: 10,
            output_tokens: 5,
            cached_input_tokens: 0,
            cache_write_tokens: 0,
        };
        limits.settle(
            SettleTarget::new(consumer, Arc::from("m")),
            admitted,
            Some(usage),
            1_000_000,
        );
        let Err(Refusal::Budget { reset, .. }) = limits.admit(consumer, 10).await else {
            panic!("spent budget admitted")
        };
        assert_eq!(reset, Duration::from_secs(12 * 3600));
        clock.0.store(noon + 12 * 3_600_000, Ordering::Relaxed);
        assert!(
            limits.admit(consumer, 10).await.is_ok(),
            "next day admits again"
        );
    }

    #[test]
    fn the_breaker_skips_redis_for_a_cool_down_and_one_probe_closes_it() {
        let b = Breaker::new(Duration::from_millis(1000));
        assert_eq!(b.check(5), Gate::Pass);
        assert!(b.trip(10), "the first failure opens it");
        assert!(
            !b.trip(20),
            "later failures extend it, once logged is enough"
        );
        // During the cool-down nobody calls Redis (nor waits for it).
        for now in [20, 500, 1019] {
            assert_eq!(b.check(now), Gate::Skip, "{now}");
        }
        // After it, exactly one caller starts the probe; the rest still skip.
        assert_eq!(b.check(1020), Gate::SkipAndProbe);
        assert_eq!(b.check(1021), Gate::Skip);
        // A failed probe means another cool-down, then another probe.
        b.probe_done(false, 1100);
        assert_eq!(b.check(1500), Gate::Skip);
        assert_eq!(b.check(2100), Gate::SkipAndProbe);
        b.probe_done(true, 2150);
        assert_eq!(b.check(2151), Gate::Pass);
        // Start-up with Redis away: open with the connection attempt as the probe.
        let b = Breaker::new(Duration::from_millis(1000));
        b.start_probe(0);
        assert_eq!(
            b.check(5000),
            Gate::Skip,
            "the start-up connection is the probe"
        );
        b.probe_done(true, 5000);
        assert_eq!(b.check(5001), Gate::Pass);
        // Clock values near the top never wrap to "closed".
        let b = Breaker::new(Duration::MAX);
        assert!(b.trip(u64::MAX - 1));
        assert_eq!(b.check(u64::MAX - 1), Gate::Skip);
    }

    #[test]
    fn numbers_sent_to_redis_fit_its_signed_integers() {
        assert_eq!(redis_int(0), 0);
        assert_eq!(redis_int(u64::from(u32::MAX)), i64::from(u32::MAX));
        assert_eq!(redis_int(i64::MAX as u64), i64::MAX);
        assert_eq!(redis_int(u64::MAX), i64::MAX);
        for (actual, reserved, delta) in [
            (10, 4, 6),
            (4, 10, -6),
            (u64::MAX, 0, i64::MAX),
            (0, u64::MAX, i64::MIN),
            (u64::MAX, u64::MAX, 0),
            (u64::MAX, u64::MAX - 5, 5),
            (u64::from(u32::MAX), u64::MAX, i64::MIN),
        ] {
            assert_eq!(token_delta(actual, reserved), delta, "{actual} {reserved}");
        }
    }

    #[tokio::test]
    async fn absurd_token_counts_settle_without_overflow() {
        let t = table(
            "apiVersion: v1\nkind: Secret\nmetadata: {name: k}\nstringData: {k: sk-1}\n---\napiVersion: switchyard.dev/v1alpha1\nkind: AIConsumer\nmetadata: {name: c}\nspec:\n  keySecretRef: {name: k, key: k}\n  budget: {usd: \"1.00\", period: day}\n  limits: {tokensPerMinute: 1000}\n",
        );
        let consumer = t.consumers().iter().next().unwrap();
        let metrics = Arc::new(Metrics::new(prometheus::Registry::new()).unwrap());
        let limits = Arc::new(Limits::local(metrics));
        let admitted = limits.admit(consumer, u64::MAX).await.unwrap();
        limits.settle(
            SettleTarget::new(consumer, Arc::from("m")),
            admitted,
            Some(Usage {
                input_tokens: u64::MAX,
                output_tokens: u64::MAX,
                cached_input_tokens: u64::MAX,
                cache_write_tokens: 0,
            }),
            u64::MAX,
        );
        // The window is full and the budget spent: refused, not wrapped around to empty.
        assert!(matches!(
            limits.admit(consumer, 1).await,
            Err(Refusal::Budget { .. })
        ));
    }

    #[test]
    fn days_format() {
        assert_eq!(day_string(0), "1970-01-01");
        assert_eq!(day_string(20_781), "2026-11-24");
    }
}
