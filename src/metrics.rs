//! Prometheus metrics for the data path and the operator, in two registries so that each process
//! (`run`/`worker`, or `controller`) shows only its own series. Labels carry destination names and
//! reasons, never secrets or event data.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use std::sync::LazyLock;

pub struct Metrics {
    registry: Registry,
    pub events_received: IntCounterVec,
    pub events_filtered: IntCounterVec,
    pub events_delivered: IntCounterVec,
    pub retries: IntCounterVec,
    pub events_dead_lettered: IntCounterVec,
    pub request_duration: HistogramVec,
    pub queue_depth: IntGaugeVec,
    pub batch_size: HistogramVec,
    pub damaged_records: IntCounterVec,
    pub endpoint_healthy: IntGaugeVec,
    pub delivery_paused: IntGaugeVec,
    pub condition: IntGaugeVec,
    pub token_expiry: IntGaugeVec,
    pub oldest_event_age: prometheus::GaugeVec,
    pub egress_refused: IntCounterVec,
    pub progress_write_failures: IntCounterVec,
}

/// The data path's series: `hookline run` and `hookline worker`.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

pub struct OperatorMetrics {
    registry: Registry,
    pub reconciles: IntCounterVec,
    pub reconcile_failures: IntCounterVec,
    pub reconcile_duration: Histogram,
    pub leader: prometheus::IntGauge,
    pub egress_refused: IntCounterVec,
}

/// The operator's series: `hookline controller`.
pub static OPERATOR_METRICS: LazyLock<OperatorMetrics> = LazyLock::new(OperatorMetrics::new);

fn register<M: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: M) -> M {
    registry
        .register(Box::new(metric.clone()))
        .expect("metric registered once");
    metric
}

fn render(registry: &Registry) -> String {
    let mut buf = Vec::new();
    TextEncoder::new()
        .encode(&registry.gather(), &mut buf)
        .expect("text encoding cannot fail");
    String::from_utf8(buf).expect("prometheus text is UTF-8")
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(
        registry,
        IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
    )
}

fn histogram(registry: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> HistogramVec {
    register(
        registry,
        HistogramVec::new(
            HistogramOpts::new(name, help).buckets(buckets),
            &["destination"],
        )
        .expect("valid metric"),
    )
}

/// Requests the egress guard refused, by the class of address; both processes send requests.
fn egress_refused(registry: &Registry) -> IntCounterVec {
    counter(
        registry,
        "hookline_egress_refused_total",
        "Outbound connections the egress guard refused, by the kind of address (loopback, link-local, private, cluster, ...)",
        &["class"],
    )
}

/// A gauge per destination.
fn gauge(registry: &Registry, name: &str, help: &str) -> IntGaugeVec {
    register(
        registry,
        IntGaugeVec::new(Opts::new(name, help), &["destination"]).expect("valid metric"),
    )
}

impl Metrics {
    fn new() -> Self {
        let registry = Registry::new();
        let queue_depth = gauge(
            &registry,
            "hookline_queue_depth",
            "Events accepted but not yet delivered, filtered or dead-lettered",
        );
        Metrics {
            events_received: counter(
                &registry,
                "hookline_events_received_total",
                "Events accepted by ingestion (durably queued)",
                &["endpoint"],
            ),
            events_filtered: counter(
                &registry,
                "hookline_events_filtered_total",
                "Events not delivered on purpose, by reason",
                &["destination", "reason"],
            ),
            events_delivered: counter(
                &registry,
                "hookline_events_delivered_total",
                "Events delivered with a 2xx answer",
                &["destination"],
            ),
            retries: counter(
                &registry,
                "hookline_delivery_retries_total",
                "Requests retried, by cause",
                &["destination", "cause"],
            ),
            events_dead_lettered: counter(
                &registry,
                "hookline_events_dead_lettered_total",
                "Events given up on and kept in the dead-letter store",
                &["destination"],
            ),
            request_duration: histogram(
                &registry,
                "hookline_request_duration_seconds",
                "Latency of delivery requests to the endpoint",
                prometheus::exponential_buckets(0.001, 2.0, 15).expect("valid buckets"),
            ),
            queue_depth,
            batch_size: histogram(
                &registry,
                "hookline_batch_size",
                "Events per delivery request",
                vec![1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0],
            ),
            damaged_records: counter(
                &registry,
                "hookline_queue_damaged_records_total",
                "Queued events lost to damage on disk (skipped when read back)",
                &["destination"],
            ),
            endpoint_healthy: gauge(
                &registry,
                "hookline_endpoint_healthy",
                "1 while the destination's circuit breaker is closed; 0 while it holds events because the endpoint keeps failing",
            ),
            delivery_paused: gauge(
                &registry,
                "hookline_delivery_paused",
                "1 when the endpoint failed longer than disableAfterSeconds and delivery waits for a person",
            ),
            condition: register(
                &registry,
                IntGaugeVec::new(
                    Opts::new(
                        "hookline_condition",
                        "1 while the destination's condition (Accepted, AuthReady, Ready, Delivering) is True, as in /status",
                    ),
                    &["destination", "type"],
                )
                .expect("valid metric"),
            ),
            token_expiry: gauge(
                &registry,
                "hookline_token_expiry_timestamp_seconds",
                "When the destination's OAuth 2.0 access token expires (Unix time)",
            ),
            oldest_event_age: register(
                &registry,
                prometheus::GaugeVec::new(
                    Opts::new(
                        "hookline_oldest_event_age_seconds",
                        "Age of the oldest event not yet delivered, filtered or dead-lettered (0 when none waits)",
                    ),
                    &["destination"],
                )
                .expect("valid metric"),
            ),
            egress_refused: egress_refused(&registry),
            progress_write_failures: counter(
                &registry,
                "hookline_progress_write_failures_total",
                "JetStream mode: records of a bundle's progress the progress bucket refused (a worker killed meanwhile delivers that bundle's done events again)",
                &["destination"],
            ),
            registry,
        }
    }

    pub fn render(&self) -> String {
        render(&self.registry)
    }
}

impl OperatorMetrics {
    fn new() -> Self {
        let registry = Registry::new();
        OperatorMetrics {
            reconciles: counter(
                &registry,
                "hookline_reconciles_total",
                "WebhookDestination reconciles, by result",
                &["result"],
            ),
            reconcile_failures: counter(
                &registry,
                "hookline_reconcile_failures_total",
                "Reconciles that found a problem (a condition reason, or an API error kind)",
                &["reason"],
            ),
            reconcile_duration: register(
                &registry,
                Histogram::with_opts(HistogramOpts::new(
                    "hookline_reconcile_duration_seconds",
                    "Time one reconcile of a WebhookDestination takes",
                ))
                .expect("valid metric"),
            ),
            leader: register(
                &registry,
                prometheus::IntGauge::new(
                    "hookline_leader",
                    "1 while this operator replica holds the Lease and runs the controller",
                )
                .expect("valid metric"),
            ),
            egress_refused: egress_refused(&registry),
            registry,
        }
    }

    pub fn render(&self) -> String {
        render(&self.registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_process_shows_only_its_own_series() {
        METRICS.events_delivered.with_label_values(&["d"]).inc();
        OPERATOR_METRICS.reconciles.with_label_values(&["ok"]).inc();
        let data_path = METRICS.render();
        let operator = OPERATOR_METRICS.render();
        assert!(data_path.contains("hookline_events_delivered_total"));
        assert!(!data_path.contains("hookline_leader") && !data_path.contains("reconcile"));
        assert!(
            operator.contains("hookline_leader") && operator.contains("hookline_reconciles_total")
        );
        assert!(!operator.contains("hookline_events"));
    }
}
