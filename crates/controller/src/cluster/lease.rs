//! Leader election over a `coordination.k8s.io/v1` Lease: the holder writes status and
//! Events, every replica serves.
//!
//! The client-go scheme, small: the holder renews every `renew_every`; another replica takes
//! over once the Lease record (holder, renew time, transitions) has not changed for the
//! Lease's duration *as measured on its own clock*, so clock skew between replicas does not
//! matter. Every write is a `replace` carrying the resourceVersion just read, so two
//! replicas racing for the Lease cannot both win. The holder steps down by itself when it
//! has not managed to renew for two thirds of the duration (so it stops writing before
//! anyone else may start), and hands the Lease back on shutdown.

use std::time::Duration;

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{api::PostParams, Api};
use tokio::{sync::watch, time::Instant};

use super::metrics::ControllerMetrics;

/// Where the Lease lives and who we are.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This replica's identity (pod name, or hostname-pid).
    pub identity: String,
    /// How long a Lease not renewed stays with its holder.
    pub duration: Duration,
    /// How often the holder renews.
    pub renew_every: Duration,
    /// How often the others check whether the Lease is free.
    pub retry_every: Duration,
}

/// What to do after reading the Lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// There is none: create it, holding it.
    Create,
    /// It is ours: renew it.
    Renew,
    /// It is free or expired: take it.
    TakeOver,
    /// Someone else holds it.
    Follow,
}

/// The parts of the Lease whose change proves its holder alive.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Record {
    holder: Option<String>,
    renew: Option<String>,
    transitions: Option<i32>,
}

/// Runs the election until `stop` flips, publishing whether we lead on `leading`.
pub(crate) struct Elector {
    api: Api<Lease>,
    config: LeaseConfig,
    observed: Option<(Record, Instant)>,
    last_renewed: Option<Instant>,
}

// === impl LeaseConfig ===

impl LeaseConfig {
    /// The defaults: a 15 s Lease renewed every 5 s, checked every 2 s by the others.
    pub fn new(namespace: String, identity: String) -> Self {
        LeaseConfig {
            namespace,
            name: "switchyard-status".into(),
            identity,
            duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
            retry_every: Duration::from_secs(2),
        }
    }
}

/// Decides from the Lease as read, and how long its record has looked unchanged to us.
pub(crate) fn decide(
    me: &str,
    lease: Option<&LeaseSpec>,
    unchanged_for: Duration,
    default_duration: Duration,
) -> Step {
    let Some(spec) = lease else {
        return Step::Create;
    };
    match spec.holder_identity.as_deref() {
        Some(h) if h == me => Step::Renew,
        None | Some("") => Step::TakeOver,
        Some(_) => {
            let duration = spec
                .lease_duration_seconds
                .and_then(|s| u64::try_from(s).ok())
                .map_or(default_duration, Duration::from_secs);
            if unchanged_for >= duration {
                Step::TakeOver
            } else {
                Step::Follow
            }
        }
    }
}

// === impl Elector ===

impl Elector {
    pub(crate) fn new(api: Api<Lease>, config: LeaseConfig) -> Self {
        Elector {
            api,
            config,
            observed: None,
            last_renewed: None,
        }
    }

    /// Campaigns until `stop` is set, then hands the Lease back if held.
    pub(crate) async fn run(
        mut self,
        leading: watch::Sender<bool>,
        metrics: ControllerMetrics,
        mut stop: watch::Receiver<bool>,
    ) {
        loop {
            let now_leading = match tokio::time::timeout(self.config.renew_every, self.tick()).await
            {
                Ok(Ok(l)) => l,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "lease: API call failed");
                    self.still_leading()
                }
                Err(_) => self.still_leading(),
            };
            if now_leading != *leading.borrow() {
                if now_leading {
                    tracing::info!(identity = %self.config.identity, lease = %self.config.name, "acquired the status lease: this replica writes status");
                } else {
                    tracing::info!(identity = %self.config.identity, "lost the status lease: this replica stops writing status");
                }
            }
            metrics.leader.set(i64::from(now_leading));
            leading.send_replace(now_leading);
            let wait = if now_leading {
                self.config.renew_every
            } else {
                self.config.retry_every
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = stop.wait_for(|s| *s) => break,
            }
        }
        if *leading.borrow() {
            leading.send_replace(false);
            metrics.leader.set(0);
            let _ = tokio::time::timeout(Duration::from_secs(2), self.release()).await;
        }
    }

    /// Whether, with the API unreachable, we may still act as leader: only well within the
    /// Lease's duration since our last renewal.
    fn still_leading(&self) -> bool {
        self.last_renewed
            .is_some_and(|t| t.elapsed() < self.config.duration * 2 / 3)
    }

    /// Reads the Lease once and acts on it; returns whether we hold it afterwards.
    async fn tick(&mut self) -> Result<bool, kube::Error> {
        let lease = self.api.get_opt(&self.config.name).await?;
        let now = Instant::now();
        let record = lease
            .as_ref()
            .and_then(|l| l.spec.as_ref())
            .map(|s| Record {
                holder: s.holder_identity.clone(),
                renew: s.renew_time.as_ref().map(|t| t.0.to_string()),
                transitions: s.lease_transitions,
            });
        let unchanged_for = match (&self.observed, &record) {
            (Some((seen, since)), Some(r)) if seen == r => now.duration_since(*since),
            _ => {
                self.observed = record.clone().map(|r| (r, now));
                Duration::ZERO
            }
        };
        let step = decide(
            &self.config.identity,
            lease.as_ref().and_then(|l| l.spec.as_ref()),
            unchanged_for,
            self.config.duration,
        );
        let stamp = MicroTime(Timestamp::now());
        let duration_secs = i32::try_from(self.config.duration.as_secs()).unwrap_or(15);
        let result = match (step, lease) {
            (Step::Follow, _) => return Ok(false),
            (Step::Create, _) | (_, None) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.config.name.clone()),
                        namespace: Some(self.config.namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.config.identity.clone()),
                        lease_duration_seconds: Some(duration_secs),
                        acquire_time: Some(stamp.clone()),
                        renew_time: Some(stamp),
                        lease_transitions: Some(0),
                        ..LeaseSpec::default()
                    }),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            (Step::Renew, Some(mut lease)) => {
                let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
                spec.renew_time = Some(stamp);
                spec.lease_duration_seconds = Some(duration_secs);
                self.api
                    .replace(&self.config.name, &PostParams::default(), &lease)
                    .await
            }
            (Step::TakeOver, Some(mut lease)) => {
                let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
                spec.holder_identity = Some(self.config.identity.clone());
                spec.lease_duration_seconds = Some(duration_secs);
                spec.acquire_time = Some(stamp.clone());
                spec.renew_time = Some(stamp);
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                self.api
                    .replace(&self.config.name, &PostParams::default(), &lease)
                    .await
            }
        };
        match result {
            Ok(_) => {
                self.last_renewed = Some(Instant::now());
                Ok(true)
            }
            // Someone else wrote first (409), or created it first: they hold it.
            Err(kube::Error::Api(s)) if s.is_conflict() || s.is_already_exists() => {
                self.last_renewed = None;
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Hands the Lease back so another replica takes over at once, not after it expires.
    async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.config.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => tracing::info!("released the status lease"),
            Err(e) => tracing::debug!(error = %e, "could not release the status lease"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held_by(h: Option<&str>, secs: Option<i32>) -> LeaseSpec {
        LeaseSpec {
            holder_identity: h.map(Into::into),
            lease_duration_seconds: secs,
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn decisions() {
        let d = Duration::from_secs(15);
        let s = Duration::from_secs;
        assert_eq!(decide("me", None, s(0), d), Step::Create);
        assert_eq!(
            decide("me", Some(&held_by(Some("me"), Some(15))), s(100), d),
            Step::Renew
        );
        assert_eq!(
            decide("me", Some(&held_by(None, Some(15))), s(0), d),
            Step::TakeOver
        );
        assert_eq!(
            decide("me", Some(&held_by(Some(""), None)), s(0), d),
            Step::TakeOver
        );
        let other = held_by(Some("other"), Some(10));
        assert_eq!(decide("me", Some(&other), s(9), d), Step::Follow);
        // The holder's own duration counts, not ours.
        assert_eq!(decide("me", Some(&other), s(10), d), Step::TakeOver);
        assert_eq!(
            decide("me", Some(&held_by(Some("other"), None)), s(14), d),
            Step::Follow
        );
    }
}
