//! Admission by consumer limits: requests and tokens per minute, and a spending budget per
//! period. Counters live in this process, or in Redis (`--redis-url`) so that limits hold
//! across replicas.
//!
//! Tokens are reserved before the request from an estimate (prompt size and `max_tokens`)
//! and corrected with the real usage afterwards, so long completions cannot burst far past
//! the limit.
//!
//! Budgets are reserved, then settled ([`switchyard_router::budget`]): admission holds the
//! request's maximum cost on the consumer's own budget and on its shared AIBudget, only when
//! it fits both, and the end of the request (answered, failed, or cancelled by the client
//! dropping the connection) gives the reservation back and charges the actual cost. Without
//! Redis this is per replica, in memory. With Redis it is one script per admission
//! ([`ADMIT_SCRIPT`]: rate windows and both budget levels checked and charged together) and
//! one per settlement ([`SETTLE_SCRIPT`]), so replicas sharing a budget cannot admit past it
//! together.
//!
//! In Redis each budget level, per period, is four keys: `sy:spend:…` (settled micro-USD),
//! `sy:held:…` (the sum of outstanding reservations), `sy:resv:…` (a hash: reservation id →
//! micro-USD) and `sy:dl:…` (a sorted set: reservation id → deadline, epoch ms). A replica
//! that crashes never settles its reservations; each one expires at its deadline
//! (`--budget-reservation-ttl`, default 15 minutes, longer than a request is allowed to run):
//! the next admission on that budget removes expired ids from the hash and subtracts them
//! from the held sum, inside the same script, so the sum is always the hash's total.
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
    budget::SharedBudget,
    consumer::Budget,
    state::{
        budget_period, BudgetLevel, LedgerEntry, LimitExceeded, Taken, WindowStatus,
        LIMIT_WINDOW_MS,
    },
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
    /// The request's maximum cost does not fit what is left of a budget.
    Budget {
        /// The shared AIBudget (`namespace/name`) that refused, or `None` for the consumer's own.
        shared: Option<Arc<str>>,
        /// The cap in USD.
        cap_usd: f64,
        /// What is left of it (cap − spend − reservations in flight), in USD.
        remaining_usd: f64,
        /// The request's reservation, in USD.
        reserve_usd: f64,
        /// Until the period ends.
        reset: Duration,
    },
    /// The counter store is unreachable and the failure mode is closed.
    Unavailable,
}

/// What admission charged, to be settled when usage is known.
#[derive(Debug, Clone, Default)]
pub struct Admitted {
    /// Windows charged.
    pub taken: Taken,
    /// The budget reservation, when a budget applies and was reserved on.
    pub reservation: Option<Reservation>,
}

/// A request's reservation on its budgets.
#[derive(Debug, Clone)]
pub struct Reservation {
    /// Unique across replicas (`<replica>:<sequence>`): the id in Redis.
    id: Arc<str>,
    /// The maximum cost held, in micro-USD.
    micro_usd: u64,
    /// The own budget's period id the reservation was made in.
    own: Option<u64>,
    /// The shared budget and its period id.
    shared: Option<(Arc<SharedBudget>, u64)>,
}

/// Admission control over the consumers' limits.
pub struct Limits {
    redis: Option<Arc<RedisStore>>,
    failure_mode: FailureMode,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    reservation_ttl: Duration,
    /// This replica's random prefix of reservation ids, and the next sequence number.
    replica: u64,
    next_reservation: AtomicU64,
}

/// How long a reservation holds budget if its request never settles (its replica crashed).
pub const DEFAULT_RESERVATION_TTL: Duration = Duration::from_secs(15 * 60);
/// Largest integer Redis's Lua numbers (doubles) hold exactly: reservations and caps sent to
/// the scripts are clamped to it (2^53 micro-USD is 9 billion USD).
const LUA_EXACT: u64 = 1 << 53;

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
    admit: Script,
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

/// Lua: check the rate windows and every budget level, then charge them all, in one atomic
/// step, so replicas sharing Redis never admit past a limit or a budget together.
///
/// KEYS: 1–4 the request and token windows (previous, current); then four per budget level
/// (spend, held, reservations hash, deadlines sorted set). ARGV: 1 overlap of the previous
/// window (ms), 2 rpm (-1 none), 3 tpm (-1 none), 4 tokens, 5 window key TTL (ms), 6 now
/// (epoch ms), 7 the reservation's deadline, 8 its id, 9 its micro-USD, 10 reservation key
/// TTL (ms), 11.. each level's cap. Returns {verdict, requests used, tokens used, spent,
/// held}: verdict 0 admitted, 1 requests, 2 tokens, 3 + level the budget level that refused.
pub const ADMIT_SCRIPT: &str = r"
local rl = tonumber(ARGV[2])
local tl = tonumber(ARGV[3])
local n = tonumber(ARGV[4])
local rated = rl >= 0 or tl >= 0
local ru, tu = 0, 0
if rated then
  local overlap = tonumber(ARGV[1])
  local rp = tonumber(redis.call('GET', KEYS[1]) or '0')
  local rc = tonumber(redis.call('GET', KEYS[2]) or '0')
  local tp = tonumber(redis.call('GET', KEYS[3]) or '0')
  local tc = tonumber(redis.call('GET', KEYS[4]) or '0')
  ru = math.floor(rp * overlap / 60000) + rc
  tu = math.floor(tp * overlap / 60000) + tc
  if rl >= 0 and ru + 1 > rl then return {1, ru, tu, 0, 0} end
  if tl >= 0 and tu > 0 and tu + n > tl then return {2, ru, tu, 0, 0} end
end
local levels = (#KEYS - 4) / 4
local now = tonumber(ARGV[6])
local amount = tonumber(ARGV[9])
for l = 0, levels - 1 do
  local k = 4 + l * 4
  local gone = redis.call('ZRANGEBYSCORE', KEYS[k + 4], '-inf', now, 'LIMIT', 0, 100)
  for _, id in ipairs(gone) do
    local a = redis.call('HGET', KEYS[k + 3], id)
    if a then
      redis.call('DECRBY', KEYS[k + 2], a)
      redis.call('HDEL', KEYS[k + 3], id)
    end
    redis.call('ZREM', KEYS[k + 4], id)
  end
  local spent = tonumber(redis.call('GET', KEYS[k + 1]) or '0')
  local held = math.max(0, tonumber(redis.call('GET', KEYS[k + 2]) or '0'))
  if spent + held + amount > tonumber(ARGV[11 + l]) then
    return {3 + l, ru, tu, spent, held}
  end
end
if rated then
  redis.call('INCRBY', KEYS[2], 1)
  redis.call('PEXPIRE', KEYS[2], ARGV[5])
  redis.call('INCRBY', KEYS[4], n)
  redis.call('PEXPIRE', KEYS[4], ARGV[5])
end
for l = 0, levels - 1 do
  local k = 4 + l * 4
  redis.call('INCRBY', KEYS[k + 2], ARGV[9])
  redis.call('HSET', KEYS[k + 3], ARGV[8], ARGV[9])
  redis.call('ZADD', KEYS[k + 4], ARGV[7], ARGV[8])
  for j = 2, 4 do redis.call('PEXPIRE', KEYS[k + j], ARGV[10]) end
end
return {0, ru + 1, tu + n, 0, 0}
";

/// Lua: settle one request on every budget level at once: give its reservation back (if it
/// is still there: it may have expired) and charge the actual cost.
///
/// KEYS: four per level (spend of the current period; held, reservations and deadlines of
/// the reservation's period). ARGV: 1 the reservation id, 2 spend key TTL (s), 3.. each
/// level's charge in micro-USD.
pub const SETTLE_SCRIPT: &str = r"
for l = 0, #KEYS / 4 - 1 do
  local k = l * 4
  local a = redis.call('HGET', KEYS[k + 3], ARGV[1])
  if a then
    redis.call('DECRBY', KEYS[k + 2], a)
    redis.call('HDEL', KEYS[k + 3], ARGV[1])
    redis.call('ZREM', KEYS[k + 4], ARGV[1])
  end
  if tonumber(ARGV[3 + l]) > 0 then
    redis.call('INCRBY', KEYS[k + 1], ARGV[3 + l])
    redis.call('EXPIRE', KEYS[k + 1], ARGV[2])
  end
end
return 0
";

impl Limits {
    /// Limits kept in this process.
    pub fn local(metrics: Arc<Metrics>) -> Self {
        Self::with_store(None, FailureMode::Open, metrics)
    }

    fn with_store(
        redis: Option<Arc<RedisStore>>,
        failure_mode: FailureMode,
        metrics: Arc<Metrics>,
    ) -> Self {
        use std::hash::{BuildHasher, Hasher};
        // A random prefix per process, so reservation ids of replicas never collide.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.write_u64(SystemClock.now_ms());
        Limits {
            redis,
            failure_mode,
            clock: Arc::new(SystemClock),
            metrics,
            reservation_ttl: DEFAULT_RESERVATION_TTL,
            replica: h.finish(),
            next_reservation: AtomicU64::new(0),
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
            admit: Script::new(ADMIT_SCRIPT),
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
        Ok(Self::with_store(Some(store), failure_mode, metrics))
    }

    /// Replaces the clock (tests).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// How long an unsettled reservation holds budget in Redis (a crashed replica's).
    pub fn with_reservation_ttl(mut self, ttl: Duration) -> Self {
        self.reservation_ttl = ttl;
        self
    }

    /// Whether counters are shared through Redis.
    pub fn is_shared(&self) -> bool {
        self.redis.is_some()
    }

    /// A small value other replicas wrote with [`Limits::shared_put`] (e.g. which backend
    /// and key stored a response); `None` when absent, without Redis, or when Redis cannot
    /// answer in time (a miss, never an error: the caller goes on without it).
    pub(crate) async fn shared_get(&self, key: &str) -> Option<String> {
        let r = self.redis.as_ref()?;
        let mut conn = r.conn().ok()?;
        let got = r.outcome(
            r.with_timeout(
                redis::cmd("GET")
                    .arg(key)
                    .query_async::<Option<String>>(&mut conn),
            )
            .await,
        );
        match got {
            Ok(v) => v,
            Err(_) => {
                self.metrics.limits_store_errors.inc();
                None
            }
        }
    }

    /// Stores `value` under `key` for `ttl`, waiting for Redis (bounded by its timeout and
    /// skipped while its breaker is open). Nothing without Redis.
    pub(crate) async fn shared_put(&self, key: &str, value: &str, ttl: Duration) {
        let Some(r) = self.redis.as_ref() else { return };
        let Ok(mut conn) = r.conn() else {
            self.metrics.limits_store_errors.inc();
            return;
        };
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut set = redis::cmd("SET");
        set.arg(key).arg(value).arg("PX").arg(ms);
        let done = r.with_timeout(set.query_async::<()>(&mut conn)).await;
        if let Err(e) = r.outcome(done) {
            self.metrics.limits_store_errors.inc();
            if let StoreError::Redis(e) = e {
                tracing::debug!(error = %e, "storing a shared value in Redis failed");
            }
        }
    }

    /// Checks and charges `consumer`'s limits for one request estimated at `tokens`, and
    /// reserves `max_micro_usd` (its maximum cost) on its budgets.
    pub async fn admit(
        &self,
        consumer: &Consumer,
        tokens: u64,
        max_micro_usd: u64,
    ) -> Result<Admitted, Refusal> {
        if !consumer.is_limited() {
            return Ok(Admitted::default());
        }
        let ask = self.ask(consumer, tokens, max_micro_usd);
        match &self.redis {
            None => ask.admit_local(),
            Some(r) => self.admit_shared(r, ask).await,
        }
    }

    /// What one request asks of `consumer`'s limits and budgets now: the clamped figures,
    /// the budgets' periods and, when a budget applies, a fresh reservation.
    fn ask<'c>(&self, consumer: &'c Consumer, tokens: u64, max_micro_usd: u64) -> Ask<'c> {
        // The estimate holds the client's `max_tokens`: reserve at most what Redis's signed
        // counters hold, the same figure here and there, so settling subtracts what was added.
        let tokens = tokens.min(i64::MAX as u64);
        let amount = max_micro_usd.min(LUA_EXACT);
        let now = self.clock.now_ms();
        let own = consumer.budget.map(|b| (b, budget_period(now, b.period)));
        let shared = consumer
            .shared_budget
            .as_ref()
            .map(|s| (s, budget_period(now, s.budget.period)));
        let reservation = (own.is_some() || shared.is_some()).then(|| Reservation {
            id: format!(
                "{:016x}:{}",
                self.replica,
                self.next_reservation.fetch_add(1, Ordering::Relaxed)
            )
            .into(),
            micro_usd: amount,
            own: own.map(|(_, (_, p, _))| p),
            shared: shared.map(|(s, (_, p, _))| (Arc::clone(s), p)),
        });
        Ask {
            consumer,
            now,
            tokens,
            amount,
            own,
            shared,
            reservation,
        }
    }

    /// Admission against Redis, shared by every replica: one script checks and charges the
    /// windows and every budget level at once. An unreachable Redis admits or refuses as the
    /// failure mode says.
    async fn admit_shared(&self, r: &Arc<RedisStore>, ask: Ask<'_>) -> Result<Admitted, Refusal> {
        let consumer = ask.consumer;
        let levels: Vec<(String, u64, u64)> = ask
            .own
            .map(|(b, (_, p, _))| (budget_key(&consumer.name, false), p, b.micro_usd))
            .into_iter()
            .chain(
                ask.shared
                    .map(|(s, (_, p, _))| (budget_key(&s.name, true), p, s.budget.micro_usd)),
            )
            .collect();
        let call = AdmitCall {
            consumer: &consumer.name,
            now: ask.now,
            rpm: consumer.requests_per_minute,
            tpm: consumer.tokens_per_minute,
            tokens: ask.tokens,
            levels: &levels,
            reservation: ask.reservation.as_ref(),
            ttl_ms: u64::try_from(self.reservation_ttl.as_millis()).unwrap_or(u64::MAX),
        };
        match r.admit(call).await {
            Ok(Verdict::Admitted(taken)) => Ok(Admitted {
                taken,
                reservation: ask.reservation,
            }),
            Ok(Verdict::Limit(e)) => Err(Refusal::Limit(e)),
            Ok(Verdict::Budget(level, spent, held)) => {
                // The levels are own-then-shared; with one level it is whichever exists.
                let level = match (level, ask.own.is_some()) {
                    (0, true) => BudgetLevel::Own,
                    _ => BudgetLevel::Shared,
                };
                Err(ask.refused(level, spent, held))
            }
            Err(e) => {
                self.store_failed(&e)?;
                Ok(Admitted::default())
            }
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

    /// Settles a request once it has ended: corrects the token reservation, gives the budget
    /// reservation back and charges the actual cost (nothing when `usage` is `None`: the
    /// request failed or was cancelled before usage was known), and updates the ledger.
    /// Redis updates run in the background.
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
        let charge = if usage.is_some() { micro_usd } else { 0 };
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
                if let Some(res) = &admitted.reservation {
                    if let Some(p) = res.own {
                        consumer.state.release(p, res.micro_usd);
                    }
                }
                // The consumer's own spend was charged by `record`; the shared one here.
                let shared = admitted
                    .reservation
                    .as_ref()
                    .and_then(|r| r.shared.clone().map(|(s, p)| (s, p, r.micro_usd)))
                    .or_else(|| consumer.shared.clone().map(|s| (s, 0, 0)));
                if let Some((s, held_period, held)) = shared {
                    let (_, p, _) = budget_period(now, s.budget.period);
                    s.state().settle(held_period, held, p, charge);
                }
            }
            Some(_) => {
                let this = Arc::clone(self);
                tokio::spawn(async move {
                    if let Some(r) = &this.redis {
                        let delta = token_delta(actual, admitted.taken.tokens);
                        let entry = usage.map(|_| entry);
                        let call = SettleCall {
                            target: &consumer,
                            window: admitted.taken.window,
                            token_delta: delta,
                            now,
                            day,
                            entry,
                            reservation: admitted.reservation.as_ref(),
                        };
                        match r.settle(call).await {
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
            Some(r) => r
                .spend(&budget_key(&consumer.name, false), period)
                .await
                .ok(),
        }
    }

    /// Spend so far in a shared budget's current period, in micro-USD (as
    /// [`Limits::period_spend`]).
    pub async fn shared_spend(&self, budget: &SharedBudget) -> Option<u64> {
        let (_, period, _) = budget_period(self.clock.now_ms(), budget.budget.period);
        match &self.redis {
            None => Some(budget.state().spend(period)),
            Some(r) => r.spend(&budget_key(&budget.name, true), period).await.ok(),
        }
    }

    /// Sets `switchyard_budget_remaining_usd` for every budget of `consumers`, from the
    /// counters (Redis's when shared), and drops the series of budgets gone.
    pub async fn refresh_budget_gauges(&self, consumers: &switchyard_router::Consumers) {
        let gauge = &self.metrics.budget_remaining_usd;
        gauge.reset();
        let remaining = |cap: u64, spent: u64| cap.saturating_sub(spent) as f64 / 1e6;
        for c in consumers.iter() {
            let Some(b) = c.budget else { continue };
            if let Some(spent) = self.period_spend(c).await {
                gauge
                    .with_label_values(&[&*c.name, "consumer"])
                    .set(remaining(b.micro_usd, spent));
            }
        }
        for b in consumers.budgets() {
            if let Some(spent) = self.shared_spend(b).await {
                gauge
                    .with_label_values(&[&*b.name, "shared"])
                    .set(remaining(b.budget.micro_usd, spent));
            }
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
    /// The shared budget it draws on, charged even when nothing was reserved (Redis away).
    pub shared: Option<Arc<SharedBudget>>,
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
            shared: consumer.shared_budget.clone(),
        }
    }
}

/// A budget period as [`budget_period`] gives it: (day, period id, period end in epoch ms).
type PeriodAt = (u64, u64, u64);

/// What one request asks of its consumer's limits and budgets ([`Limits::admit`]).
struct Ask<'c> {
    consumer: &'c Consumer,
    /// Epoch milliseconds the windows and budget periods are read at.
    now: u64,
    /// The token estimate, clamped to what Redis's counters hold.
    tokens: u64,
    /// The reservation in micro-USD, clamped to what Lua's numbers hold exactly.
    amount: u64,
    /// The own budget and its period now.
    own: Option<(Budget, PeriodAt)>,
    /// The shared budget and its period now.
    shared: Option<(&'c Arc<SharedBudget>, PeriodAt)>,
    reservation: Option<Reservation>,
}

// === impl Ask ===

impl Ask<'_> {
    /// Admission on this replica alone: the budgets reserved on first (both or neither),
    /// then the windows charged; a refused window gives the reservation back.
    fn admit_local(self) -> Result<Admitted, Refusal> {
        let consumer = self.consumer;
        let state = consumer.state();
        if let Some(res) = &self.reservation {
            let own_cap = self.own.map(|(b, (_, p, _))| (b.micro_usd, p));
            let shared_cap = self
                .shared
                .map(|(s, (_, p, _))| (&**s.state(), s.budget.micro_usd, p));
            if let Err(level) = state.reserve(own_cap, shared_cap, self.amount) {
                let (spent, held) = match (level, &res.shared) {
                    (BudgetLevel::Shared, Some((s, p))) => {
                        (s.state().spend(*p), s.state().held(*p))
                    }
                    _ => res.own.map_or((0, 0), |p| (state.spend(p), state.held(p))),
                };
                return Err(self.refused(level, spent, held));
            }
        }
        let (rpm, tpm) = (consumer.requests_per_minute, consumer.tokens_per_minute);
        let taken = if rpm.is_none() && tpm.is_none() {
            Ok(Taken::default())
        } else {
            state.try_take(self.now, rpm, tpm, self.tokens)
        };
        match taken {
            Ok(taken) => Ok(Admitted {
                taken,
                reservation: self.reservation,
            }),
            Err(e) => {
                if let Some(res) = &self.reservation {
                    release_local(state, res);
                }
                Err(Refusal::Limit(e))
            }
        }
    }

    /// The refusal of the budget at `level`, which holds `spent` and `held` now.
    fn refused(&self, level: BudgetLevel, spent: u64, held: u64) -> Refusal {
        let now = self.now;
        let (name, cap, end) = match level {
            BudgetLevel::Own => match self.own {
                Some((b, (_, _, end))) => (None, b.micro_usd, end),
                None => (None, 0, now),
            },
            BudgetLevel::Shared => match self.shared {
                Some((s, (_, _, end))) => (Some(Arc::clone(&s.name)), s.budget.micro_usd, end),
                None => (None, 0, now),
            },
        };
        let left = cap.saturating_sub(spent).saturating_sub(held);
        Refusal::Budget {
            shared: name,
            cap_usd: cap as f64 / 1e6,
            remaining_usd: left as f64 / 1e6,
            reserve_usd: self.amount as f64 / 1e6,
            reset: Duration::from_millis(end.saturating_sub(now)),
        }
    }
}

/// Gives a local reservation back on both levels, charging nothing.
fn release_local(state: &ConsumerState, res: &Reservation) {
    if let Some(p) = res.own {
        state.release(p, res.micro_usd);
    }
    if let Some((s, p)) = &res.shared {
        s.state().settle(*p, res.micro_usd, *p, 0);
    }
}

/// The name a budget's Redis keys carry: the consumer's `namespace/name` (its keys predate
/// shared budgets), or `aibudget:namespace/name`. Namespaces hold no `:`, so they never clash.
fn budget_key(name: &str, shared: bool) -> String {
    if shared {
        format!("aibudget:{name}")
    } else {
        name.to_string()
    }
}

/// The four Redis keys of one budget level: spend of `spend_period`, and held, reservations
/// and deadlines of `held_period`.
fn level_keys(name: &str, spend_period: u64, held_period: u64) -> [String; 4] {
    [
        format!("sy:spend:{name}:{spend_period}"),
        format!("sy:held:{name}:{held_period}"),
        format!("sy:resv:{name}:{held_period}"),
        format!("sy:dl:{name}:{held_period}"),
    ]
}

/// One admission as sent to Redis.
struct AdmitCall<'a> {
    consumer: &'a str,
    now: u64,
    rpm: Option<u64>,
    tpm: Option<u64>,
    tokens: u64,
    /// Budget levels: key name, period id, cap.
    levels: &'a [(String, u64, u64)],
    reservation: Option<&'a Reservation>,
    ttl_ms: u64,
}

/// What Redis said to an admission.
enum Verdict {
    Admitted(Taken),
    Limit(LimitExceeded),
    /// The level (0-based, own before shared) that refused, its spend and reservations.
    Budget(u64, u64, u64),
}

/// One settlement as sent to Redis.
struct SettleCall<'a> {
    target: &'a SettleTarget,
    window: u64,
    token_delta: i64,
    now: u64,
    day: u64,
    entry: Option<LedgerEntry>,
    reservation: Option<&'a Reservation>,
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

    async fn spend(self: &Arc<Self>, name: &str, period: u64) -> Result<u64, StoreError> {
        let mut conn = self.conn()?;
        let key = format!("sy:spend:{name}:{period}");
        let v: Option<u64> = self.outcome(
            self.with_timeout(redis::cmd("GET").arg(&key).query_async(&mut conn))
                .await,
        )?;
        Ok(v.unwrap_or(0))
    }

    async fn admit(self: &Arc<Self>, c: AdmitCall<'_>) -> Result<Verdict, StoreError> {
        let mut conn = self.conn()?;
        let window = c.now / LIMIT_WINDOW_MS;
        let into = c.now % LIMIT_WINDOW_MS;
        let overlap = LIMIT_WINDOW_MS - into;
        let reset = Duration::from_millis(overlap);
        let consumer = c.consumer;
        let key = |kind: &str, w: u64| format!("sy:rl:{kind}:{consumer}:{w}");
        let mut inv = self.admit.prepare_invoke();
        inv.key(key("r", window.saturating_sub(1)))
            .key(key("r", window))
            .key(key("t", window.saturating_sub(1)))
            .key(key("t", window));
        for (name, period, _) in c.levels {
            for k in level_keys(name, *period, *period) {
                inv.key(k);
            }
        }
        let (id, amount) = c
            .reservation
            .map_or(("", 0), |r| (&*r.id, r.micro_usd.min(LUA_EXACT)));
        inv.arg(overlap)
            .arg(c.rpm.map_or(-1, redis_int))
            .arg(c.tpm.map_or(-1, redis_int))
            .arg(redis_int(c.tokens))
            .arg(2 * LIMIT_WINDOW_MS + 5_000)
            .arg(redis_int(c.now))
            .arg(redis_int(c.now.saturating_add(c.ttl_ms)))
            .arg(id)
            .arg(amount)
            // The keys outlive every reservation in them.
            .arg(redis_int(c.ttl_ms.saturating_mul(2).max(60_000)));
        for (_, _, cap) in c.levels {
            inv.arg((*cap).min(LUA_EXACT));
        }
        let (verdict, req_used, tok_used, spent, held): (u64, u64, u64, u64, u64) =
            self.outcome(self.with_timeout(inv.invoke_async(&mut conn)).await)?;
        let status = |limit: u64, used: u64| WindowStatus {
            limit,
            remaining: limit.saturating_sub(used),
            reset,
        };
        let rated = c.rpm.is_some() || c.tpm.is_some();
        Ok(match verdict {
            0 => Verdict::Admitted(Taken {
                window: if rated { window } else { 0 },
                tokens: if rated { c.tokens } else { 0 },
                requests: c.rpm.map(|l| status(l, req_used)),
                token_status: c.tpm.map(|l| status(l, tok_used)),
            }),
            1 => Verdict::Limit(LimitExceeded::Requests(status(
                c.rpm.unwrap_or(0),
                req_used,
            ))),
            2 => Verdict::Limit(LimitExceeded::Tokens(status(c.tpm.unwrap_or(0), tok_used))),
            n => Verdict::Budget(n.saturating_sub(3), spent, held),
        })
    }

    async fn settle(self: &Arc<Self>, call: SettleCall<'_>) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let c = call.target;
        let mut pipe = redis::pipe();
        if c.tokens_limited && call.token_delta != 0 && call.window != 0 {
            pipe.cmd("INCRBY")
                .arg(format!("sy:rl:t:{}:{}", c.name, call.window))
                .arg(call.token_delta)
                .ignore();
        }
        // Own level (always: spend is kept for a budget added later), then the shared one.
        let charge = call.entry.map_or(0, |e| redis_int(e.micro_usd));
        let (_, own_period, _) = budget_period(call.now, c.period);
        let own_held = call.reservation.and_then(|r| r.own).unwrap_or(own_period);
        let mut levels = vec![level_keys(
            &budget_key(&c.name, false),
            own_period,
            own_held,
        )];
        let shared = call
            .reservation
            .and_then(|r| r.shared.as_ref().map(|(s, p)| (s, *p)))
            .or_else(|| c.shared.as_ref().map(|s| (s, 0)));
        if let Some((s, held_period)) = shared {
            let (_, p, _) = budget_period(call.now, s.budget.period);
            let held_period = if held_period == 0 { p } else { held_period };
            levels.push(level_keys(&budget_key(&s.name, true), p, held_period));
        }
        let mut eval = redis::cmd("EVAL");
        eval.arg(SETTLE_SCRIPT).arg(levels.len() * 4);
        for k in levels.iter().flatten() {
            eval.arg(k);
        }
        eval.arg(call.reservation.map_or("", |r| &*r.id))
            .arg(40 * 86_400);
        for _ in &levels {
            eval.arg(charge);
        }
        pipe.add_command(eval).ignore();
        if let Some(e) = call.entry {
            let ledger_key = format!("sy:ledger:{}:{}", c.name, call.day);
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
        }
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

    use switchyard_router::consumer::BudgetPeriod;

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
        let c = switchyard_compile::compile(&r, 1);
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
        let admitted = limits.admit(consumer, 10, 1).await.unwrap();
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
        let Err(Refusal::Budget { reset, .. }) = limits.admit(consumer, 10, 1).await else {
            panic!("spent budget admitted")
        };
        assert_eq!(reset, Duration::from_secs(12 * 3600));
        clock.0.store(noon + 12 * 3_600_000, Ordering::Relaxed);
        assert!(
            limits.admit(consumer, 10, 1).await.is_ok(),
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

    const SHARED: &str = "apiVersion: v1\nkind: Secret\nmetadata: {name: k}\nstringData: {a: sk-a, b: sk-b}\n---\napiVersion: switchyard.dev/v1alpha1\nkind: AIBudget\nmetadata: {name: team}\nspec: {usd: \"0.000300\", period: day}\n---\napiVersion: switchyard.dev/v1alpha1\nkind: AIConsumer\nmetadata: {name: a}\nspec:\n  keySecretRef: {name: k, key: a}\n  budgetRef: {name: team}\n  budget: {usd: \"0.000250\", period: day}\n  limits: {requestsPerMinute: 1000}\n---\napiVersion: switchyard.dev/v1alpha1\nkind: AIConsumer\nmetadata: {name: b}\nspec:\n  keySecretRef: {name: k, key: b}\n  budgetRef: {name: team}\n";

    #[tokio::test]
    async fn reservations_cannot_overshoot_and_settle_to_the_actual_cost() {
        let t = table(SHARED);
        let consumers = t.consumers();
        let (a, b) = (
            consumers.get("default/a").unwrap(),
            consumers.get("default/b").unwrap(),
        );
        let metrics = Arc::new(Metrics::new(prometheus::Registry::new()).unwrap());
        let limits = Arc::new(Limits::local(metrics));
        let settle = |c: &Consumer, adm: Admitted, usage: Option<Usage>, micro: u64| {
            limits.settle(SettleTarget::new(c, Arc::from("m")), adm, usage, micro);
        };
        // a: own 250, team 300. Two reservations of 100 fit a, the third does not (own).
        let a1 = limits.admit(a, 0, 100).await.unwrap();
        let a2 = limits.admit(a, 0, 100).await.unwrap();
        let Err(Refusal::Budget {
            shared,
            remaining_usd,
            ..
        }) = limits.admit(a, 0, 100).await
        else {
            panic!("a third reservation fit a's 250")
        };
        assert_eq!((shared, remaining_usd), (None, 50e-6));
        // b: only the team's 300, 200 of it held by a.
        let b1 = limits.admit(b, 0, 100).await.unwrap();
        let Err(Refusal::Budget { shared, .. }) = limits.admit(b, 0, 1).await else {
            panic!("the team budget overshot")
        };
        assert_eq!(shared.as_deref(), Some("default/team"));
        // a1 cost 30: 70 comes back on both levels. a2 failed: 100 comes back, nothing spent.
        let usage = Usage {
            input_tokens: 10,
            output_tokens: 5,
            ..Usage::default()
        };
        settle(a, a1, Some(usage), 30);
        settle(a, a2, None, 0);
        let team = b.shared_budget.as_ref().unwrap();
        assert_eq!(limits.shared_spend(team).await, Some(30));
        assert_eq!(limits.period_spend(a).await, Some(30));
        // The team has 300 - 30 spent - 100 held (b1) = 170 left.
        assert!(limits.admit(b, 0, 171).await.is_err());
        let b2 = limits.admit(b, 0, 170).await.unwrap();
        settle(b, b1, None, 0);
        settle(b, b2, None, 0);
        // A refusal by the rate limit gives the reservation back at once.
        let t2 = table(
            "apiVersion: v1\nkind: Secret\nmetadata: {name: k}\nstringData: {k: sk-1}\n---\napiVersion: switchyard.dev/v1alpha1\nkind: AIConsumer\nmetadata: {name: c}\nspec:\n  keySecretRef: {name: k, key: k}\n  budget: {usd: \"0.000100\", period: day}\n  limits: {requestsPerMinute: 1}\n",
        );
        let c = t2.consumers().iter().next().unwrap();
        let _first = limits.admit(c, 0, 10).await.unwrap();
        assert!(matches!(
            limits.admit(c, 0, 10).await,
            Err(Refusal::Limit(LimitExceeded::Requests(_)))
        ));
        let (_, period, _) = budget_period(SystemClock.now_ms(), BudgetPeriod::Day);
        assert_eq!(c.state().held(period), 10);
    }

    #[test]
    fn reservation_cost_measured() {
        // Local reservation plus settlement, two levels: the figure `make bench` would show.
        let t = table(SHARED);
        let b = t.consumers().get("default/b").unwrap();
        let team = b.shared_budget.as_ref().unwrap();
        let state = b.state();
        let n = 200_000u32;
        let start = std::time::Instant::now();
        for _ in 0..n {
            state
                .reserve(None, Some((&**team.state(), u64::MAX, 1)), 100)
                .unwrap();
            team.state().settle(1, 100, 1, 0);
        }
        let per = start.elapsed() / n;
        eprintln!("reserve + settle (memory, shared level): {per:?} per request");
        assert!(per < Duration::from_millis(1));
    }

    #[tokio::test]
    async fn absurd_token_counts_settle_without_overflow() {
        let t = table(
            "apiVersion: v1\nkind: Secret\nmetadata: {name: k}\nstringData: {k: sk-1}\n---\napiVersion: switchyard.dev/v1alpha1\nkind: AIConsumer\nmetadata: {name: c}\nspec:\n  keySecretRef: {name: k, key: k}\n  budget: {usd: \"1.00\", period: day}\n  limits: {tokensPerMinute: 1000}\n",
        );
        let consumer = t.consumers().iter().next().unwrap();
        let metrics = Arc::new(Metrics::new(prometheus::Registry::new()).unwrap());
        let limits = Arc::new(Limits::local(metrics));
        let admitted = limits.admit(consumer, u64::MAX, 0).await.unwrap();
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
            limits.admit(consumer, 1, 1).await,
            Err(Refusal::Budget { .. })
        ));
    }

    #[test]
    fn days_format() {
        assert_eq!(day_string(0), "1970-01-01");
        assert_eq!(day_string(20_781), "2026-11-24");
    }
}
