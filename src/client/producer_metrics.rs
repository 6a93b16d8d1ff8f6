//! A producer's spill journal in a Prometheus registry of the application's: gauges read
//! at each scrape (`Producer::register_metrics`).
//!
//! Owns the gauges' names. Never changes the journal: it reads the status the producer
//! keeps.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;

use crate::client::spill_journal::SpillStatus;

/// Reads the spill journal's status (`None`: the producer has no journal).
pub type StatusSource = Arc<dyn Fn() -> Option<SpillStatus> + Send + Sync>;

/// The spill journal's gauges, read at each scrape.
pub struct SpillCollector {
    status: StatusSource,
}

impl std::fmt::Debug for SpillCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SpillCollector")
    }
}

impl SpillCollector {
    /// Gauges of the journal `status` reads.
    pub fn new(status: StatusSource) -> SpillCollector {
        SpillCollector { status }
    }
}

fn gauge<N: prometheus_client::encoding::EncodeGaugeValue + std::fmt::Debug>(
    encoder: &mut DescriptorEncoder,
    (name, help, unit): (&str, &str, Option<&Unit>),
    value: N,
) -> Result<(), std::fmt::Error> {
    let gauge = ConstGauge::new(value);
    let metric = encoder.encode_descriptor(name, help, unit, gauge.metric_type())?;
    gauge.encode(metric)
}

impl Collector for SpillCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(status) = (self.status)() else {
            return Ok(());
        };
        gauge(
            &mut encoder,
            (
                "keel_client_spill_pending_batches",
                "Batches in the producer's spill journal not yet replayed to the cluster",
                None,
            ),
            i64::try_from(status.pending_batches).unwrap_or(i64::MAX),
        )?;
        gauge(
            &mut encoder,
            (
                "keel_client_spill",
                "Bytes of the spill journal's files",
                Some(&Unit::Bytes),
            ),
            i64::try_from(status.bytes).unwrap_or(i64::MAX),
        )?;
        gauge(
            &mut encoder,
            (
                "keel_client_spill_oldest_age",
                "Age of the oldest batch waiting in the spill journal (0: none)",
                Some(&Unit::Seconds),
            ),
            status.oldest_age.map_or(0.0, |age| age.as_secs_f64()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::registry::Registry;
    use std::time::Duration;

    #[test]
    fn the_journal_status_is_read_at_each_scrape() {
        let mut registry = Registry::default();
        let status = SpillStatus {
            pending_batches: 3,
            bytes: 4096,
            oldest_age: Some(Duration::from_millis(1500)),
        };
        registry.register_collector(Box::new(SpillCollector::new(Arc::new(move || {
            Some(status)
        }))));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("keel_client_spill_pending_batches 3"),
            "{text}"
        );
        assert!(text.contains("keel_client_spill_bytes 4096"), "{text}");
        assert!(
            text.contains("keel_client_spill_oldest_age_seconds 1.5"),
            "{text}"
        );
    }
}
