//! Samples and their summary: exact percentiles over every recorded request (no histogram
//! buckets), so microsecond differences between targets survive.

use std::time::Duration;

use serde_json::{json, Value};

/// Timings of the requests one worker completed inside the measured window.
#[derive(Debug, Default)]
pub struct Samples {
    /// Request sent (or dispatched, for open loop) to the last body byte.
    pub latency_ns: Vec<u64>,
    /// Request sent (or dispatched) to the first body byte.
    pub ttfb_ns: Vec<u64>,
    /// Response body bytes received.
    pub bytes: u64,
    /// Failures, by kind.
    pub errors: Errors,
}

/// Failed requests, by kind.
#[derive(Debug, Default, Clone, Copy)]
pub struct Errors {
    /// The TCP connection could not be made.
    pub connect: u64,
    /// A non-2xx status.
    pub status: u64,
    /// The connection broke mid-exchange.
    pub io: u64,
    /// No complete answer within the request timeout.
    pub timeout: u64,
}

// === impl Samples ===

impl Samples {
    /// Records one successful request.
    pub fn push(&mut self, ttfb: Duration, total: Duration, bytes: u64) {
        self.ttfb_ns.push(nanos(ttfb));
        self.latency_ns.push(nanos(total));
        self.bytes += bytes;
    }

    /// Folds `other` into `self`.
    pub fn merge(&mut self, other: Samples) {
        self.latency_ns.extend(other.latency_ns);
        self.ttfb_ns.extend(other.ttfb_ns);
        self.bytes += other.bytes;
        self.errors.connect += other.errors.connect;
        self.errors.status += other.errors.status;
        self.errors.io += other.errors.io;
        self.errors.timeout += other.errors.timeout;
    }

    /// Successful requests.
    pub fn ok(&self) -> u64 {
        self.latency_ns.len() as u64
    }
}

// === impl Errors ===

impl Errors {
    /// All failures.
    pub fn total(&self) -> u64 {
        self.connect + self.status + self.io + self.timeout
    }

    /// As JSON.
    pub fn to_json(self) -> Value {
        json!({
            "connect": self.connect,
            "status": self.status,
            "io": self.io,
            "timeout": self.timeout,
        })
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Count, mean and exact nearest-rank percentiles, in microseconds.
pub fn summary(values: &mut [u64]) -> Value {
    if values.is_empty() {
        return json!({"count": 0});
    }
    values.sort_unstable();
    let n = values.len();
    let us = |ns: u64| (ns as f64 / 100.0).round() / 10.0;
    let pct = |p: f64| {
        // Nearest rank: the smallest value with at least p of the samples at or below it.
        let rank = ((p * n as f64).ceil() as usize).clamp(1, n);
        us(values[rank - 1])
    };
    let sum: u128 = values.iter().map(|&v| u128::from(v)).sum();
    json!({
        "count": n,
        "mean": us((sum / n as u128) as u64),
        "min": us(values[0]),
        "p50": pct(0.50),
        "p90": pct(0.90),
        "p99": pct(0.99),
        "p999": pct(0.999),
        "max": us(values[n - 1]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut v: Vec<u64> = (1..=1000).map(|i| i * 1000).collect();
        let s = summary(&mut v);
        assert_eq!(s["count"], 1000);
        assert_eq!(s["p50"], 500.0);
        assert_eq!(s["p99"], 990.0);
        assert_eq!(s["max"], 1000.0);
        assert_eq!(summary(&mut [])["count"], 0);
    }
}
