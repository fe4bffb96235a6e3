//! `AIConsumer.status.spendUsd`: the spend of each budgeted consumer in its current period,
//! written by the Lease holder at a bounded rate (every `interval`, and only when the figure
//! changed), so `kubectl get aiconsumers` shows it without a status write per request.
//!
//! The figure comes from the data plane's counters through [`SpendSource`]: with Redis it is
//! every replica's spend; without, it is the Lease holder's own.

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use kube::{
    api::{Patch, PatchParams},
    Api, Client, ResourceExt,
};
use switchyard_api::AIConsumer;
use tokio::sync::watch;

use super::{metrics::ControllerMetrics, Stores};

/// Boxed future of a spend reading.
pub type SpendFuture<'a> = Pin<Box<dyn Future<Output = Option<u64>> + Send + 'a>>;

/// Reads a consumer's spend in its current budget period.
pub trait SpendSource: Send + Sync + 'static {
    /// Micro-USD spent by the consumer `namespace/name`; `None` when it has no budget in
    /// the serving table or the figure cannot be read now.
    fn spend<'a>(&'a self, consumer: &'a str) -> SpendFuture<'a>;
}

/// Writes spend while `leading`, every `interval`, until `stop`.
pub(crate) async fn run(
    client: Client,
    stores: Stores,
    source: Arc<dyn SpendSource>,
    interval: Duration,
    metrics: ControllerMetrics,
    mut leading: watch::Receiver<bool>,
    mut stop: watch::Receiver<bool>,
) {
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
                if obj.spec.budget.is_none() {
                    continue;
                }
                let (Some(ns), name) = (obj.namespace(), obj.name_any()) else {
                    continue;
                };
                let Some(micro) = source.spend(&format!("{ns}/{name}")).await else {
                    continue;
                };
                let shown = usd(micro);
                let current = obj.status.as_ref().and_then(|s| s.spend_usd.as_deref());
                if current == Some(shown.as_str()) {
                    continue;
                }
                let api: Api<AIConsumer> = Api::namespaced(client.clone(), &ns);
                let patch = serde_json::json!({"status": {"spendUsd": shown}});
                let params = PatchParams {
                    field_manager: Some("switchyard".into()),
                    ..PatchParams::default()
                };
                let result = api
                    .patch_status(&name, &params, &Patch::Merge(&patch))
                    .await;
                let label = match &result {
                    Ok(_) => "success",
                    Err(kube::Error::Api(s)) if s.is_not_found() => continue,
                    Err(_) => "error",
                };
                metrics.status_writes.with_label_values(&[label]).inc();
                if let Err(e) = result {
                    tracing::debug!(consumer = %format!("{ns}/{name}"), error = %e, "spend status write failed; next tick retries");
                }
            }
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
}
