//! `AIConsumer.status.spendUsd` / `remainingUsd` and the same on `AIBudget`: the spend of each
//! budget in its current period, written by the Lease holder at a bounded rate (every
//! `interval`, and only when a figure changed), so `kubectl get aiconsumers,aibudgets` shows
//! it without a status write per request. When spend crosses 50, 80 or 100 % of a budget an
//! Event is recorded on the resource (`BudgetThreshold`, `BudgetExhausted` as a Warning); the
//! highest threshold reached is kept in `status.thresholdPercent`, so each is announced once
//! per period, whichever replica leads.
//!
//! The figure comes from the data plane's counters through [`SpendSource`]: with Redis it is
//! every replica's spend; without, it is the Lease holder's own.

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use kube::{
    api::{Patch, PatchParams},
    runtime::events::{Event, EventType, Recorder, Reporter},
    Api, Client, Resource, ResourceExt,
};
use switchyard_api::{parse_price, AIBudget, AIConsumer};
use tokio::sync::watch;

use super::{metrics::ControllerMetrics, Stores};

/// Boxed future of a spend reading.
pub type SpendFuture<'a> = Pin<Box<dyn Future<Output = Option<u64>> + Send + 'a>>;

/// Reads a consumer's spend in its current budget period.
pub trait SpendSource: Send + Sync + 'static {
    /// Micro-USD spent by the consumer `namespace/name`; `None` when it has no budget in
    /// the serving table or the figure cannot be read now.
    fn spend<'a>(&'a self, consumer: &'a str) -> SpendFuture<'a>;

    /// Micro-USD spent on the AIBudget `namespace/name` by every consumer drawing on it, and
    /// those consumers; `None` when it is not in the serving table or cannot be read now.
    fn shared_spend<'a>(&'a self, budget: &'a str) -> SharedSpendFuture<'a>;
}

/// Boxed future of a shared budget's spend and members.
pub type SharedSpendFuture<'a> =
    Pin<Box<dyn Future<Output = Option<(u64, Vec<String>)>> + Send + 'a>>;

/// Writes spend while `leading`, every `interval`, until `stop`.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run(
    client: Client,
    stores: Stores,
    source: Arc<dyn SpendSource>,
    interval: Duration,
    metrics: ControllerMetrics,
    identity: String,
    mut leading: watch::Receiver<bool>,
    mut stop: watch::Receiver<bool>,
) {
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "switchyard".into(),
            instance: Some(identity),
        },
    );
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        if !*leading.borrow_and_update() {
            continue;
        }
        for store in &stores.consumers {
            for obj in store.state() {
                let Some(budget) = &obj.spec.budget else {
                    continue;
                };
                let (Some(ns), name) = (obj.namespace(), obj.name_any()) else {
                    continue;
                };
                let Some(micro) = source.spend(&format!("{ns}/{name}")).await else {
                    continue;
                };
                let cap = parse_price(&budget.usd).map_or(0, |p| p.0);
                let status = obj.status.as_ref();
                let shown = Shown::new(micro, cap, status.and_then(|s| s.threshold_percent));
                let current = (
                    status.and_then(|s| s.spend_usd.as_deref()),
                    status.and_then(|s| s.remaining_usd.as_deref()),
                    status.and_then(|s| s.threshold_percent),
                );
                let api: Api<AIConsumer> = Api::namespaced(client.clone(), &ns);
                write(
                    &api, &*obj, &name, &shown, current, None, &recorder, &metrics,
                )
                .await;
            }
        }
        for store in &stores.budgets {
            for obj in store.state() {
                let (Some(ns), name) = (obj.namespace(), obj.name_any()) else {
                    continue;
                };
                let Some((micro, members)) = source.shared_spend(&format!("{ns}/{name}")).await
                else {
                    continue;
                };
                let cap = parse_price(&obj.spec.usd).map_or(0, |p| p.0);
                let status = obj.status.as_ref();
                let shown = Shown::new(micro, cap, status.and_then(|s| s.threshold_percent));
                let current = (
                    status.and_then(|s| s.spend_usd.as_deref()),
                    status.and_then(|s| s.remaining_usd.as_deref()),
                    status.and_then(|s| s.threshold_percent),
                );
                let same_members = status.map(|s| &s.consumers) == Some(&members);
                let api: Api<AIBudget> = Api::namespaced(client.clone(), &ns);
                let members = (!same_members).then_some(members);
                write(
                    &api, &*obj, &name, &shown, current, members, &recorder, &metrics,
                )
                .await;
            }
        }
    }
}

/// Thresholds of a budget that raise an Event when spend crosses them, in percent.
pub const THRESHOLDS: [u32; 3] = [50, 80, 100];

/// A budget's figures as status shows them.
#[derive(Debug, PartialEq, Eq)]
struct Shown {
    spend: String,
    remaining: String,
    /// The highest threshold reached (0 for none).
    threshold: u32,
    /// The threshold just crossed upwards, if any: worth an Event.
    crossed: Option<u32>,
    percent: u64,
}

impl Shown {
    fn new(micro: u64, cap: u64, previous: Option<u32>) -> Self {
        let percent = if cap == 0 {
            100
        } else {
            u64::try_from(u128::from(micro) * 100 / u128::from(cap)).unwrap_or(u64::MAX)
        };
        let threshold = THRESHOLDS
            .iter()
            .rev()
            .copied()
            .find(|t| percent >= u64::from(*t))
            .unwrap_or(0);
        Shown {
            spend: usd(micro),
            remaining: usd(cap.saturating_sub(micro)),
            threshold,
            // Lower than before means a new period: no Event for going down.
            crossed: (threshold > previous.unwrap_or(0)).then_some(threshold),
            percent,
        }
    }
}

/// Patches the status when a figure changed, and records an Event for a threshold crossed.
#[allow(clippy::too_many_arguments)]
async fn write<K>(
    api: &Api<K>,
    obj: &K,
    name: &str,
    shown: &Shown,
    current: (Option<&str>, Option<&str>, Option<u32>),
    members: Option<Vec<String>>,
    recorder: &Recorder,
    metrics: &ControllerMetrics,
) where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let unchanged = current
        == (
            Some(shown.spend.as_str()),
            Some(shown.remaining.as_str()),
            Some(shown.threshold),
        );
    if unchanged && members.is_none() {
        return;
    }
    let mut status = serde_json::json!({
        "spendUsd": shown.spend,
        "remainingUsd": shown.remaining,
        "thresholdPercent": shown.threshold,
    });
    if let Some(m) = members {
        status["consumers"] = serde_json::json!(m);
    }
    let patch = serde_json::json!({ "status": status });
    let params = PatchParams {
        field_manager: Some("switchyard".into()),
        ..PatchParams::default()
    };
    let result = api.patch_status(name, &params, &Patch::Merge(&patch)).await;
    let label = match &result {
        Ok(_) => "success",
        Err(kube::Error::Api(s)) if s.is_not_found() => return,
        Err(_) => "error",
    };
    metrics.status_writes.with_label_values(&[label]).inc();
    if let Err(e) = result {
        tracing::debug!(name, error = %e, "spend status write failed; next tick retries");
        return;
    }
    // Recorded once the status says so: a new leader reads the threshold back from status
    // and does not announce it again.
    if let Some(t) = shown.crossed {
        let event = Event {
            type_: if t >= 100 {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: if t >= 100 {
                "BudgetExhausted".into()
            } else {
                "BudgetThreshold".into()
            },
            note: Some(format!(
                "spend {} USD is {}% of the budget, past the {t}% threshold; {} USD left this period",
                shown.spend, shown.percent, shown.remaining
            )),
            action: "Spend".into(),
            secondary: None,
        };
        if let Err(e) = recorder.publish(&event, &obj.object_ref(&())).await {
            tracing::debug!(error = %e, "could not record a budget Event");
        }
    }
}

/// Micro-USD as a decimal string with no trailing zeros: `"0.000125"`, `"12.5"`, `"0"`.
fn usd(micro: u64) -> String {
    let whole = micro / 1_000_000;
    let frac = micro % 1_000_000;
    if frac == 0 {
        return whole.to_string();
    }
    let frac = format!("{frac:06}");
    format!("{whole}.{}", frac.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    #[test]
    fn usd_is_exact_and_short() {
        assert_eq!(super::usd(0), "0");
        assert_eq!(super::usd(125), "0.000125");
        assert_eq!(super::usd(12_500_000), "12.5");
        assert_eq!(super::usd(3_000_000), "3");
        assert_eq!(super::usd(1_234_567), "1.234567");
    }

    #[test]
    fn thresholds_are_crossed_once_and_reset_with_the_period() {
        use super::Shown;
        let cap = 10_000_000;
        let s = Shown::new(4_900_000, cap, None);
        assert_eq!((s.threshold, s.crossed), (0, None));
        let s = Shown::new(5_000_000, cap, Some(0));
        assert_eq!((s.threshold, s.crossed), (50, Some(50)));
        assert_eq!((s.spend.as_str(), s.remaining.as_str()), ("5", "5"));
        // Already announced: not again.
        assert_eq!(Shown::new(7_000_000, cap, Some(50)).crossed, None);
        // Straight past two: the highest is announced.
        let s = Shown::new(12_000_000, cap, Some(50));
        assert_eq!(
            (s.threshold, s.crossed, s.remaining.as_str()),
            (100, Some(100), "0")
        );
        // A new period: down to nothing, no Event.
        let s = Shown::new(0, cap, Some(100));
        assert_eq!((s.threshold, s.crossed), (0, None));
        // A zero cap is spent from the start.
        assert_eq!(Shown::new(0, 0, None).crossed, Some(100));
    }
}
