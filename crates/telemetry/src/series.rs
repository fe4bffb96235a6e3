//! Recording one finished request: its count, duration, tokens and spend.
//!
//! Each `with_label_values` hashes every label value and takes the family's lock; a request
//! touches five families, which cost some 250 ns per request (`make bench`,
//! `telemetry/record/request`). The children of one label set are resolved once per worker
//! thread and kept in a thread-local table found by one hash, with no lock and nothing shared
//! between workers.

use std::{cell::OnceCell, cell::RefCell, collections::HashMap, hash::BuildHasher, rc::Rc};

use prometheus::{Counter, Histogram, IntCounter};

use crate::Metrics;

/// Label sets cached per thread before the table is emptied: it holds only what configured
/// routes, backends and consumers can produce, so this is reached only after much churn.
const MAX_CACHED: usize = 4096;

/// The label values of a request's series.
#[derive(Clone, Copy, Debug)]
pub struct RequestLabels<'a> {
    /// Route `namespace/name`.
    pub route: &'a str,
    /// The configured model pattern that matched.
    pub model: &'a str,
    /// Backend `namespace/name`.
    pub backend: &'a str,
    /// Provider of the backend.
    pub provider: &'a str,
    /// Consumer `namespace/name`, or empty.
    pub consumer: &'a str,
    /// Status code sent to the caller.
    pub status: &'a str,
}

impl RequestLabels<'_> {
    fn values(&self) -> [&str; 6] {
        [
            self.route,
            self.model,
            self.backend,
            self.provider,
            self.consumer,
            self.status,
        ]
    }
}

/// What one finished request adds.
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestSample {
    /// Whole request time, in seconds.
    pub seconds: f64,
    /// Time to the first token of a stream, in seconds.
    pub ttft: Option<f64>,
    /// Stream time per output token after the first, in seconds.
    pub per_token: Option<f64>,
    /// Input, output, cache-read and cache-write tokens (a zero count adds nothing).
    pub tokens: [u64; 4],
    /// Spend in USD (zero adds nothing).
    pub cost_usd: f64,
    /// The request had usage but its model no known price: counted in
    /// `switchyard_spend_unknown_total`, its spend left out rather than counted as $0.
    pub price_unknown: bool,
    /// USD the prompt cache saved (zero adds nothing).
    pub saved_usd: f64,
}

const TOKEN_TYPES: [&str; 4] = ["input", "output", "cache_read", "cache_write"];

/// The children of one label set. Families a request may not touch are resolved when first
/// used, so no series appears before it has a value.
struct Series {
    labels: [Box<str>; 6],
    requests: IntCounter,
    duration: Histogram,
    tokens: [OnceCell<IntCounter>; 4],
    spend: OnceCell<Counter>,
    saved: OnceCell<Counter>,
    unknown: OnceCell<IntCounter>,
    ttft: OnceCell<Histogram>,
    per_token: OnceCell<Histogram>,
}

thread_local! {
    /// By (metrics instance, label values) hash; a colliding label set replaces the entry.
    static CACHE: RefCell<HashMap<u64, Rc<Series>, foldhash::fast::FixedState>> =
        RefCell::default();
}

impl Metrics {
    /// Records one finished request: `switchyard_requests_total`, the duration histogram,
    /// and when present time to first token, time per output token, tokens and spend.
    pub fn record_request(&self, labels: &RequestLabels<'_>, sample: &RequestSample) {
        let series = self.series(labels);
        series.requests.inc();
        series.duration.observe(sample.seconds);
        let [route, model, backend, provider, consumer, _] = labels.values();
        if let Some(t) = sample.ttft {
            series
                .ttft
                .get_or_init(|| {
                    self.time_to_first_token
                        .with_label_values(&[route, model, backend])
                })
                .observe(t);
        }
        if let Some(t) = sample.per_token {
            series
                .per_token
                .get_or_init(|| {
                    self.time_per_output_token
                        .with_label_values(&[route, model, backend])
                })
                .observe(t);
        }
        for ((n, cell), kind) in sample.tokens.iter().zip(&series.tokens).zip(TOKEN_TYPES) {
            if *n > 0 {
                cell.get_or_init(|| {
                    self.tokens
                        .with_label_values(&[route, model, backend, provider, consumer, kind])
                })
                .inc_by(*n);
            }
        }
        if sample.cost_usd > 0.0 {
            series
                .spend
                .get_or_init(|| {
                    self.spend_usd
                        .with_label_values(&[route, model, backend, consumer])
                })
                .inc_by(sample.cost_usd);
        }
        if sample.price_unknown {
            series
                .unknown
                .get_or_init(|| {
                    self.spend_unknown
                        .with_label_values(&[route, model, backend])
                })
                .inc();
        }
        if sample.saved_usd > 0.0 {
            series
                .saved
                .get_or_init(|| {
                    self.cost_saved_usd
                        .with_label_values(&[route, model, backend, consumer])
                })
                .inc_by(sample.saved_usd);
        }
    }

    fn series(&self, labels: &RequestLabels<'_>) -> Rc<Series> {
        let values = labels.values();
        let key = {
            let mut h = foldhash::fast::FixedState::with_seed(self.id).build_hasher();
            std::hash::Hash::hash(&values, &mut h);
            std::hash::Hasher::finish(&h)
        };
        CACHE.with(|cache| {
            if let Some(s) = cache.borrow().get(&key) {
                if s.labels.iter().map(|l| &**l).eq(values) {
                    return Rc::clone(s);
                }
            }
            let [route, model, backend, _, _, status] = values;
            let series = Rc::new(Series {
                labels: values.map(Box::from),
                requests: self.requests.with_label_values(&values),
                duration: self
                    .request_duration
                    .with_label_values(&[route, model, backend, status]),
                tokens: Default::default(),
                spend: OnceCell::new(),
                saved: OnceCell::new(),
                unknown: OnceCell::new(),
                ttft: OnceCell::new(),
                per_token: OnceCell::new(),
            });
            let mut cache = cache.borrow_mut();
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
            cache.insert(key, Rc::clone(&series));
            series
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::Registry;

    fn labels<'a>(route: &'a str, status: &'a str) -> RequestLabels<'a> {
        RequestLabels {
            route,
            model: "gpt-4o",
            backend: "default/mock",
            provider: "openai",
            consumer: "team-a/app",
            status,
        }
    }

    #[test]
    fn every_family_gets_its_series_and_absent_values_add_none() {
        let m = Metrics::new(Registry::new()).unwrap();
        let plain = RequestSample {
            seconds: 0.5,
            tokens: [10, 20, 4, 2],
            cost_usd: 0.25,
            saved_usd: 0.5,
            ..Default::default()
        };
        m.record_request(&labels("default/chat", "200"), &plain);
        m.record_request(&labels("default/chat", "200"), &plain);
        let stream = RequestSample {
            ttft: Some(0.1),
            per_token: Some(0.01),
            tokens: [1, 0, 0, 0],
            ..plain
        };
        m.record_request(&labels("default/chat", "502"), &stream);
        m.record_request(&labels("default/other", "200"), &RequestSample::default());
        let text = m.encode_text().unwrap();
        let base = r#"backend="default/mock",consumer="team-a/app",model="gpt-4o",provider="openai",route="default/chat""#;
        for line in [
            format!("switchyard_requests_total{{{base},status=\"200\"}} 2"),
            format!("switchyard_requests_total{{{base},status=\"502\"}} 1"),
            format!("switchyard_tokens_total{{{base},type=\"input\"}} 21"),
            format!("switchyard_tokens_total{{{base},type=\"output\"}} 40"),
            format!("switchyard_tokens_total{{{base},type=\"cache_read\"}} 8"),
            format!("switchyard_tokens_total{{{base},type=\"cache_write\"}} 4"),
            r#"switchyard_cost_saved_usd_total{backend="default/mock",consumer="team-a/app",model="gpt-4o",route="default/chat"} 1.5"#.into(),
            r#"switchyard_spend_usd_total{backend="default/mock",consumer="team-a/app",model="gpt-4o",route="default/chat"} 0.75"#.into(),
            r#"switchyard_request_duration_seconds_count{backend="default/mock",model="gpt-4o",route="default/chat",status="200"} 2"#.into(),
            r#"switchyard_time_to_first_token_seconds_count{backend="default/mock",model="gpt-4o",route="default/chat"} 1"#.into(),
            r#"switchyard_time_per_output_token_seconds_count{backend="default/mock",model="gpt-4o",route="default/chat"} 1"#.into(),
            r#"switchyard_requests_total{backend="default/mock",consumer="team-a/app",model="gpt-4o",provider="openai",route="default/other",status="200"} 1"#.into(),
        ] {
            assert!(text.contains(&line), "missing {line}\n{text}");
        }
        // Zero counts and costs, and the stream histograms of plain requests, add no series.
        assert!(!text.contains("switchyard_spend_unknown_total{"), "{text}");
        m.record_request(
            &labels("default/chat", "200"),
            &RequestSample {
                price_unknown: true,
                ..Default::default()
            },
        );
        let text = m.encode_text().unwrap();
        assert!(
            text.contains(r#"switchyard_spend_unknown_total{backend="default/mock",model="gpt-4o",route="default/chat"} 1"#),
            "{text}"
        );
        assert!(!text.contains(r#"route="default/other"} "#), "{text}");
        assert_eq!(
            text.matches("switchyard_spend_usd_total{").count(),
            1,
            "{text}"
        );
    }

    #[test]
    fn two_metrics_instances_on_one_thread_do_not_share_series() {
        let a = Metrics::new(Registry::new()).unwrap();
        let b = Metrics::new(Registry::new()).unwrap();
        let l = labels("default/chat", "200");
        a.record_request(&l, &RequestSample::default());
        b.record_request(&l, &RequestSample::default());
        b.record_request(&l, &RequestSample::default());
        let count = |m: &Metrics| m.requests.with_label_values(&l.values()).get();
        assert_eq!((count(&a), count(&b)), (1, 2));
    }
}
