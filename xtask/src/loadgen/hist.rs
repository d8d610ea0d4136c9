//! Report→Ack latency histograms that survive the trip from a worker to the
//! parent: each worker records into HDR histograms and sends their buckets,
//! and the parent adds the buckets up, so the merged percentiles are those
//! of every sample (not an average of per-worker percentiles).

use anyhow::{Context, Result};
use hdrhistogram::Histogram;

/// The largest latency recorded, in microseconds (one hour); longer ones are
/// clamped to it.
const MAX_MICROS: u64 = 3_600_000_000;

/// Report kinds, as indices into [`Latencies`].
pub const INVENTORY: usize = 0;
pub const HEALTH: usize = 1;
pub const DELTA: usize = 2;
const KINDS: [&str; 3] = ["inventory", "health", "delta"];

fn empty() -> Histogram<u64> {
    // Three significant digits: 0.1 % resolution at any magnitude.
    Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("constant, valid bounds")
}

/// Latencies of one run or worker, by phase (ramp or steady) and kind.
#[derive(Debug, Clone)]
pub struct Latencies {
    /// `[steady as usize][kind]`.
    by: [[Histogram<u64>; 3]; 2],
}

impl Default for Latencies {
    fn default() -> Self {
        Self {
            by: std::array::from_fn(|_| std::array::from_fn(|_| empty())),
        }
    }
}

impl Latencies {
    /// Records one acknowledged report.
    pub fn record(&mut self, steady: bool, kind: usize, micros: u64) {
        if let Some(h) = self.by[usize::from(steady)].get_mut(kind) {
            h.saturating_record(micros.clamp(1, MAX_MICROS));
        }
    }

    /// The buckets, for the trip to the parent: per phase and kind, a list
    /// of `[value, count]`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut out = serde_json::Map::new();
        for (phase, name) in [(0, "ramp"), (1, "steady")] {
            for (kind, kind_name) in KINDS.iter().enumerate() {
                let buckets: Vec<[u64; 2]> = self.by[phase][kind]
                    .iter_recorded()
                    .map(|v| [v.value_iterated_to(), v.count_at_value()])
                    .collect();
                out.insert(format!("{name}_{kind_name}"), buckets.into());
            }
        }
        out.into()
    }

    /// Adds the buckets a worker sent.
    pub fn merge_json(&mut self, value: &serde_json::Value) -> Result<()> {
        for (phase, name) in [(0, "ramp"), (1, "steady")] {
            for (kind, kind_name) in KINDS.iter().enumerate() {
                let key = format!("{name}_{kind_name}");
                let Some(buckets) = value.get(&key).and_then(|b| b.as_array()) else {
                    continue;
                };
                for bucket in buckets {
                    let pair = bucket
                        .as_array()
                        .context("a histogram bucket is not a pair")?;
                    let (Some(v), Some(n)) = (
                        pair.first().and_then(serde_json::Value::as_u64),
                        pair.get(1).and_then(serde_json::Value::as_u64),
                    ) else {
                        anyhow::bail!("a histogram bucket is not two numbers");
                    };
                    self.by[phase][kind].saturating_record_n(v.clamp(1, MAX_MICROS), n);
                }
            }
        }
        Ok(())
    }

    /// Reports acknowledged in one phase, of every kind.
    pub fn count(&self, steady: bool) -> u64 {
        self.by[usize::from(steady)]
            .iter()
            .map(Histogram::len)
            .sum()
    }

    /// p50/p99/max of one phase, of one kind or (`None`) of all kinds.
    pub fn summary(&self, steady: bool, kind: Option<usize>) -> serde_json::Value {
        let mut h = empty();
        for (k, one) in self.by[usize::from(steady)].iter().enumerate() {
            if kind.is_none_or(|want| want == k) {
                // Same bounds and precision, so adding never fails.
                let _ = h.add(one);
            }
        }
        let ms = |micros: u64| micros as f64 / 1000.0;
        if h.is_empty() {
            return serde_json::json!({"count": 0, "p50_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0});
        }
        serde_json::json!({
            "count": h.len(),
            "p50_ms": ms(h.value_at_quantile(0.50)),
            "p99_ms": ms(h.value_at_quantile(0.99)),
            "max_ms": ms(h.max()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_percentiles_are_those_of_all_samples() {
        // One worker saw fast reports, the other slow ones: the merged p50
        // must sit between them and the p99 with the slow ones, which an
        // average of the two workers' percentiles would not give.
        let mut fast = Latencies::default();
        let mut slow = Latencies::default();
        for i in 0..900 {
            fast.record(true, HEALTH, 1_000 + i);
        }
        for i in 0..100 {
            slow.record(true, HEALTH, 500_000 + i);
        }
        let mut merged = Latencies::default();
        merged.merge_json(&fast.to_json()).expect("merge");
        merged.merge_json(&slow.to_json()).expect("merge");
        let s = merged.summary(true, None);
        assert_eq!(s["count"], 1000);
        let p50 = s["p50_ms"].as_f64().expect("p50");
        let p99 = s["p99_ms"].as_f64().expect("p99");
        assert!((1.0..2.0).contains(&p50), "p50 {p50}");
        assert!((499.0..502.0).contains(&p99), "p99 {p99}");
        assert_eq!(merged.count(false), 0);
    }
}
