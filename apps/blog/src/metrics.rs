//! `GET /metrics`: Prometheus metrics of the gateways and the REST API, in the OpenMetrics
//! text format.
//!
//! Gateways (fed by a [`wsgate::Observer`]):
//! - `wsgate_connections{transport}`: open connections (gauge);
//! - `wsgate_connections_opened_total{transport}`: connections accepted;
//! - `wsgate_handshakes_refused_total{transport,status}`: handshakes refused (bad token, ...);
//! - `wsgate_messages_total{namespace,event,outcome}`: messages handled; `outcome` is `ok`,
//!   `error`, `unrouted` or `undecodable`, and `event` is empty for the last two, so clients
//!   cannot create series by inventing event names;
//! - `wsgate_handler_duration_seconds{namespace,event}`: time from dispatch to the answer
//!   (guards, extractors, handler), before it is queued or written;
//! - `wsgate_sleeping_connections`: websocket sessions asleep (`--hibernate-after`), of the
//!   process;
//! - `wsgate_lingers_total`: times a runtime worker lingered before it slept
//!   (`--linger-us`, `wsgate::runtime::Linger`), of the process.
//!
//! Connection state recovery (unless `RECOVERY_WINDOW=0`):
//! `wsgate_recoveries_total{outcome}` (`recovered`, `expired`: too late or unknown,
//! `refused`: another identity or a forged offset), `wsgate_recovery_history_events` (events
//! held for replay) and `wsgate_recovery_sessions` (dropped sessions waiting).
//!
//! Broker (with `REDIS_URL`): `wsgate_broker_connected` (1 or 0), and
//! `wsgate_broker_{published,received,dropped,reconnects}_total`.
//!
//! REST API:
//! - `http_requests_total{method,route,status}` and
//!   `http_request_duration_seconds{method,route}`, where `route` is the route's pattern
//!   (`/entries/{id}`), or `unmatched`.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder,
};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use wsgate::{Connection, EventName, Namespace, Observer, Outcome, Refusal, Server};

use crate::AppState;

/// The OpenMetrics text format's content type.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The blog's metrics. Cheap to clone; every clone records into the same registry.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    connections: Family<TransportLabels, Gauge>,
    opened: Family<TransportLabels, Counter>,
    refused: Family<RefusedLabels, Counter>,
    messages: Family<MessageLabels, Counter>,
    handler_seconds: Family<EventLabels, Histogram, fn() -> Histogram>,
    http_requests: Family<HttpLabels, Counter>,
    http_seconds: Family<RouteLabels, Histogram, fn() -> Histogram>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransportLabels {
    transport: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusedLabels {
    transport: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MessageLabels {
    namespace: Label<Namespace>,
    event: Option<Label<EventName>>,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    namespace: Label<Namespace>,
    event: Label<EventName>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

/// A shared name (namespace, event) as a label value, cloned without allocating.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct Label<T>(T);

impl<T: std::fmt::Display> EncodeLabelValue for Label<T> {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        write!(encoder, "{}", self.0)
    }
}

/// Latency buckets from 50 µs to about 1.6 s, doubling.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

/// The broker's status, read at each scrape.
#[derive(Debug)]
struct BrokerCollector {
    server: Server,
}

impl Collector for BrokerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        let Some(status) = self.server.broker_status() else { return Ok(()) };
        let help = "Whether the broker (Redis) links this instance to the others";
        let connected = ConstGauge::new(i64::from(status.connected));
        encode_one(&mut encoder, "wsgate_broker_connected", help, connected)?;
        let counters = [
            ("wsgate_broker_published", "Envelopes published to other instances", status.published),
            ("wsgate_broker_received", "Envelopes received from other instances", status.received),
            ("wsgate_broker_dropped", "Envelopes lost while the broker was down", status.dropped),
            ("wsgate_broker_reconnects", "Times the broker reconnected", status.reconnects),
        ];
        for (name, help, value) in counters {
            encode_one(&mut encoder, name, help, ConstCounter::new(value))?;
        }
        Ok(())
    }
}

#[derive(Debug)]
struct RecoveryCollector {
    server: Server,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

impl Collector for RecoveryCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        let Some(stats) = self.server.recovery_stats() else { return Ok(()) };
        let outcomes = [
            ("recovered", stats.recovered),
            ("expired", stats.expired),
            ("refused", stats.refused),
        ];
        let help = "Sessions presented for recovery, by outcome";
        let mut family = encoder.encode_descriptor(
            "wsgate_recoveries",
            help,
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (outcome, value) in outcomes {
            let counter = ConstCounter::new(value);
            counter.encode(family.encode_family(&OutcomeLabels { outcome })?)?;
        }
        let gauges = [
            ("wsgate_recovery_history_events", "Events held for replay", stats.events),
            (
                "wsgate_recovery_sessions",
                "Dropped sessions waiting to be recovered",
                stats.sessions,
            ),
        ];
        for (name, help, value) in gauges {
            let value = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
            encode_one(&mut encoder, name, help, value)?;
        }
        Ok(())
    }
}

/// The process's sessions asleep and its workers' lingers, read when scraped.
#[derive(Debug)]
struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        let asleep = i64::try_from(wsgate_ws::resting()).unwrap_or(i64::MAX);
        let help = "Websocket sessions asleep (--hibernate-after)";
        encode_one(&mut encoder, "wsgate_sleeping_connections", help, ConstGauge::new(asleep))?;
        let help = "Times a runtime worker lingered before it slept (--linger-us)";
        let lingers = ConstCounter::new(wsgate::runtime::lingers());
        encode_one(&mut encoder, "wsgate_lingers", help, lingers)
    }
}

/// One metric without labels (a `ConstGauge`, a `ConstCounter`), its value read at the scrape.
fn encode_one(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    metric: impl EncodeMetric,
) -> std::fmt::Result {
    let encoder = encoder.encode_descriptor(name, help, None, metric.metric_type())?;
    metric.encode(encoder)
}

impl Metrics {
    /// Empty metrics, registered under their names; the broker's status (if `server` has a
    /// broker) is read from `server` at each scrape.
    pub fn new(server: &Server) -> Self {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(BrokerCollector { server: server.clone() }));
        registry.register_collector(Box::new(RecoveryCollector { server: server.clone() }));
        registry.register_collector(Box::new(ProcessCollector));
        let connections = Family::default();
        registry.register("wsgate_connections", "Open gateway connections", connections.clone());
        let opened = Family::default();
        registry.register(
            "wsgate_connections_opened",
            "Gateway connections accepted",
            opened.clone(),
        );
        let refused = Family::default();
        registry.register(
            "wsgate_handshakes_refused",
            "Gateway handshakes refused by connection middleware",
            refused.clone(),
        );
        let messages = Family::default();
        registry.register("wsgate_messages", "Gateway messages handled", messages.clone());
        let handler_seconds =
            Family::<_, _, fn() -> Histogram>::new_with_constructor(latency_histogram);
        registry.register(
            "wsgate_handler_duration_seconds",
            "Time from a message's dispatch to its answer, before it is queued or written",
            handler_seconds.clone(),
        );
        let http_requests = Family::default();
        registry.register("http_requests", "REST requests answered", http_requests.clone());
        let http_seconds =
            Family::<_, _, fn() -> Histogram>::new_with_constructor(latency_histogram);
        registry.register(
            "http_request_duration_seconds",
            "Time to answer a REST request",
            http_seconds.clone(),
        );
        let inner = Inner {
            registry,
            connections,
            opened,
            refused,
            messages,
            handler_seconds,
            http_requests,
            http_seconds,
        };
        Self { inner: Arc::new(inner) }
    }

    /// Every metric in the OpenMetrics text format.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.inner.registry);
        text
    }

    fn http_request(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let labels = HttpLabels { method: method.to_owned(), route: route.to_owned(), status };
        self.inner.http_requests.get_or_create(&labels).inc();
        let labels = RouteLabels { method: labels.method, route: labels.route };
        self.inner.http_seconds.get_or_create(&labels).observe(elapsed.as_secs_f64());
    }
}

impl Observer for Metrics {
    fn connection_opened(&self, conn: &Connection) {
        let labels = TransportLabels { transport: conn.transport() };
        self.inner.connections.get_or_create(&labels).inc();
        self.inner.opened.get_or_create(&labels).inc();
    }

    fn connection_closed(&self, conn: &Connection) {
        let labels = TransportLabels { transport: conn.transport() };
        self.inner.connections.get_or_create(&labels).dec();
    }

    fn handshake_refused(&self, transport: &'static str, refusal: &Refusal) {
        let labels = RefusedLabels { transport, status: refusal.status.as_u16() };
        self.inner.refused.get_or_create(&labels).inc();
    }

    fn message(
        &self,
        conn: &Connection,
        event: Option<&EventName>,
        outcome: Outcome,
        elapsed: Duration,
    ) {
        let namespace = Label(conn.namespace().clone());
        let event = event.map(|e| Label(e.clone()));
        if let Some(event) = &event {
            let labels = EventLabels { namespace: namespace.clone(), event: event.clone() };
            self.inner.handler_seconds.get_or_create(&labels).observe(elapsed.as_secs_f64());
        }
        let labels = MessageLabels { namespace, event, outcome: outcome.as_str() };
        self.inner.messages.get_or_create(&labels).inc();
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// `GET /metrics`, public as `/healthz` is (bind to a private address or filter it at the
/// proxy where that matters).
pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/metrics", get(metrics))
}

/// Metrics
///
/// Prometheus metrics in the OpenMetrics text format: gateway connections and messages,
/// handler latency, REST requests by route. Public, as `/healthz` is.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus metrics, OpenMetrics text", content_type = "application/openmetrics-text", body = String)))]
async fn metrics(State(state): State<AppState>) -> Response {
    let mut response = state.metrics.render().into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    response
}

/// Middleware counting and timing REST requests by route pattern.
pub(crate) async fn track(
    State(metrics): State<Metrics>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned());
    let response = next.run(request).await;
    let route = route.as_deref().unwrap_or("unmatched");
    metrics.http_request(method.as_str(), route, response.status().as_u16(), started.elapsed());
    response
}
