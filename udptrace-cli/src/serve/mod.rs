//! `udptrace serve`: a Prometheus exporter. Sends, receives and drops are
//! counted in the kernel (as `count` does) and read when Prometheus scrapes
//! `/metrics`: no event crosses to user space. Each read takes what the
//! kernel counted since the last one and adds it to cumulative series, so
//! counters never go backwards while the process lives. With `--latency`,
//! receives' times in the queue are added up in the kernel too, into a
//! histogram per label set.

mod http;
mod web_config;

use std::collections::{HashMap, HashSet};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use udptrace::{
    bucket_upper_bound, CgroupResolver, CountField, CountRow, CountValue, EventKind, HistRow,
    Histogram, Tracer, HIST_BUCKETS,
};

use crate::trace::SelectArgs;
use http::Server;
use web_config::WebConfig;

/// A port no other exporter is known to use by default.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:10050";

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address and port to serve /metrics on
    #[arg(long, value_name = "ADDR:PORT", default_value = DEFAULT_LISTEN, value_parser = parse_listen)]
    listen: SocketAddr,
    /// Labels of each series (comma-separated, each once): comm, pid, dport,
    /// sport, daddr, saddr, netns, container_id, pod_uid, cgroup_path
    #[arg(long, value_name = "LABEL[,LABEL...]", value_delimiter = ',', default_value = "comm", value_parser = parse_label)]
    by: Vec<Label>,
    /// Most label sets kept; beyond it, new ones count in one series
    /// labelled overflow="true" (1 or more)
    #[arg(long, value_name = "N", default_value_t = 10_000, value_parser = parse_max_series)]
    max_series: usize,
    /// TLS and basic auth, as Prometheus exporters configure them: a YAML
    /// file with tls_server_config (cert_file, key_file, client_ca_file,
    /// client_auth_type) and basic_auth_users (user: bcrypt hash)
    #[arg(long, value_name = "FILE")]
    web_config_file: Option<PathBuf>,
    /// Also export udptrace_receive_queue_seconds: a histogram of how long
    /// received datagrams waited in their socket's queue, by the same labels
    /// (costs a stamp per datagram queued: see the latency page)
    #[arg(long)]
    latency: bool,
    #[command(flatten)]
    select: SelectArgs,
}

impl ServeArgs {
    /// Labels given twice, which the parser cannot see alone.
    pub fn check(&self) -> Result<(), String> {
        match self
            .by
            .iter()
            .find(|l| self.by.iter().filter(|m| m == l).count() > 1)
        {
            Some(twice) => Err(format!("label '{}' is given twice", twice.name())),
            None => Ok(()),
        }
    }
}

/// A label of the series: a count key, or what the task's cgroup shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Label {
    Key(CountField),
    ContainerId,
    PodUid,
    CgroupPath,
}

const KEY_LABELS: [CountField; 7] = [
    CountField::Comm,
    CountField::Pid,
    CountField::Dport,
    CountField::Sport,
    CountField::Daddr,
    CountField::Saddr,
    CountField::Netns,
];

impl Label {
    fn name(self) -> &'static str {
        match self {
            Label::Key(f) => f.name(),
            Label::ContainerId => "container_id",
            Label::PodUid => "pod_uid",
            Label::CgroupPath => "cgroup_path",
        }
    }
}

fn parse_label(s: &str) -> Result<Label, String> {
    match s {
        "container_id" => Ok(Label::ContainerId),
        "pod_uid" => Ok(Label::PodUid),
        "cgroup_path" => Ok(Label::CgroupPath),
        _ => KEY_LABELS
            .into_iter()
            .find(|f| f.name() == s)
            .map(Label::Key)
            .ok_or_else(|| {
                format!(
                    "unknown label '{}' (expected comm, pid, dport, sport, daddr, saddr, netns, \
                     container_id, pod_uid or cgroup_path)",
                    s.escape_debug()
                )
            }),
    }
}

fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    s.parse().map_err(|_| {
        format!(
            "'{}' is not ADDR:PORT (e.g. 0.0.0.0:10050, 127.0.0.1:10050 or [::1]:10050)",
            s.escape_debug()
        )
    })
}

fn parse_max_series(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!(
            "'{}' is not a number of series of 1 or more",
            s.escape_debug()
        )),
    }
}

/// What a series counts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Measure {
    /// Datagrams and their payload bytes, by direction.
    Datagrams(&'static str),
    /// Failed sends or receives, by direction and errno.
    Errors(&'static str, String),
    /// Drops, by reason.
    Drops(String),
}

/// The counter families the series make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Datagrams,
    Bytes,
    Drops,
    Errors,
}

impl Family {
    const ALL: [Family; 4] = [Self::Datagrams, Self::Bytes, Self::Drops, Self::Errors];

    /// Its name (without `_total`, which the encoders add) and help.
    fn describe(self) -> (&'static str, &'static str) {
        match self {
            Self::Datagrams => (
                "udptrace_datagrams",
                "UDP datagrams sent and received by sockets (sends and receives that succeeded)",
            ),
            Self::Bytes => (
                "udptrace_bytes",
                "UDP payload bytes of the datagrams sent and received",
            ),
            Self::Drops => (
                "udptrace_drops",
                "UDP datagrams the kernel dropped, by reason (as drop events name it)",
            ),
            Self::Errors => (
                "udptrace_errors",
                "UDP sends and receives that failed, by errno",
            ),
        }
    }

    /// The labels a series of `measure` has in this family; `None` if it has none here.
    fn labels(self, measure: &Measure) -> Option<Vec<(&'static str, String)>> {
        match (self, measure) {
            (Self::Datagrams | Self::Bytes, Measure::Datagrams(direction)) => {
                Some(vec![("direction", direction.to_string())])
            }
            (Self::Drops, Measure::Drops(reason)) => Some(vec![("reason", reason.clone())]),
            (Self::Errors, Measure::Errors(direction, errno)) => Some(vec![
                ("direction", direction.to_string()),
                ("errno", errno.clone()),
            ]),
            _ => None,
        }
    }
}

/// One series: what it counts, and its label values (empty: the overflow).
type SeriesKey = (Measure, Vec<String>);

/// The cumulative series, and what reads them from the kernel.
struct Exporter {
    tracer: Tracer,
    labels: Vec<Label>,
    /// The count keys the kernel counts by: the labels', then event, reason, errno.
    fields: Vec<CountField>,
    max_series: usize,
    series: HashMap<SeriesKey, (u64, u64)>,
    /// Receive-queue waits by label values (empty: the overflow), with --latency.
    waits: Option<HashMap<Vec<String>, HistRow>>,
    label_sets: HashSet<Vec<String>>,
    overflow_events: u64,
    cgroups: CgroupResolver,
    backend: String,
}

impl Exporter {
    fn new(
        tracer: Tracer,
        labels: Vec<Label>,
        fields: Vec<CountField>,
        max_series: usize,
        latency: bool,
    ) -> Self {
        let backend = tracer.backend().to_string();
        Exporter {
            tracer,
            labels,
            fields,
            max_series,
            series: HashMap::new(),
            waits: latency.then(HashMap::new),
            label_sets: HashSet::new(),
            overflow_events: 0,
            cgroups: CgroupResolver::new(),
            backend,
        }
    }

    /// Adds what the kernel counted since the last read. A failed read
    /// leaves its rows in the kernel for the next one, and says so.
    fn drain_or_warn(&mut self) {
        match self.tracer.take_counts() {
            Ok(rows) => rows.into_iter().for_each(|row| self.add(row)),
            Err(e) => eprintln!("udptrace: warning: reading the kernel's counts: {e}"),
        }
        if self.waits.is_some() {
            match self.tracer.take_histograms() {
                Ok(rows) => rows.into_iter().for_each(|row| self.add_waits(row)),
                Err(e) => eprintln!("udptrace: warning: reading the kernel's histograms: {e}"),
            }
        }
    }

    /// A key's value of `field`, where the kernel keys by it.
    fn value_of<'k>(&self, key: &'k [CountValue], field: CountField) -> Option<&'k CountValue> {
        let at = self.fields.iter().position(|f| *f == field)?;
        key.get(at)
    }

    /// The label values of a kernel key, in --by order.
    fn label_values(&mut self, key: &[CountValue]) -> Vec<String> {
        let cgroup = match self.value_of(key, CountField::Cgroup) {
            Some(CountValue::Cgroup(id)) => self.cgroups.resolve(*id),
            _ => None,
        };
        self.labels
            .iter()
            .map(|l| match l {
                Label::Key(f) => self
                    .value_of(key, *f)
                    .map(|v| v.to_string())
                    .unwrap_or_default(),
                Label::ContainerId => cgroup
                    .as_ref()
                    .and_then(|c| c.container_id.clone())
                    .unwrap_or_default(),
                Label::PodUid => cgroup
                    .as_ref()
                    .and_then(|c| c.pod_uid.clone())
                    .unwrap_or_default(),
                Label::CgroupPath => cgroup.as_ref().map(|c| c.path.clone()).unwrap_or_default(),
            })
            .collect()
    }

    /// `labels` if its set has a series, or room for one; else the overflow's
    /// (empty), which `events` are counted into.
    fn admit(&mut self, labels: Vec<String>, events: u64) -> Vec<String> {
        if self.label_sets.contains(&labels) {
            labels
        } else if self.label_sets.len() < self.max_series {
            self.label_sets.insert(labels.clone());
            labels
        } else {
            self.overflow_events += events;
            Vec::new()
        }
    }

    fn add_waits(&mut self, row: HistRow) {
        let labels = self.label_values(&row.key);
        // Its receives are counted in the overflow already, as datagrams.
        let labels = self.admit(labels, 0);
        let Some(waits) = self.waits.as_mut() else {
            return;
        };
        match waits.get_mut(&labels) {
            Some(total) => total.merge(&row),
            None => {
                waits.insert(
                    labels,
                    HistRow {
                        key: Vec::new(),
                        ..row
                    },
                );
            }
        }
    }

    fn add(&mut self, row: CountRow) {
        let value = |field: CountField| self.value_of(&row.key, field);
        let measure = match (
            value(CountField::Event),
            value(CountField::Reason),
            value(CountField::Errno),
        ) {
            (Some(CountValue::Event(EventKind::Drop)), Some(CountValue::Reason(r)), _) => {
                Measure::Drops(r.clone().unwrap_or_default())
            }
            (Some(CountValue::Event(kind)), _, Some(CountValue::Errno(errno))) => {
                let direction = if *kind == EventKind::Recv {
                    "recv"
                } else {
                    "send"
                };
                match errno {
                    Some(e) => Measure::Errors(direction, e.clone()),
                    None => Measure::Datagrams(direction),
                }
            }
            _ => return,
        };
        let labels = self.label_values(&row.key);
        let labels = self.admit(labels, row.events);
        let total = self.series.entry((measure, labels)).or_default();
        total.0 += row.events;
        total.1 += row.bytes;
    }

    /// The label pairs of a series, with what it counts by.
    fn label_pairs(&self, first: &[(&str, String)], values: &[String]) -> Vec<(String, String)> {
        let mut pairs: Vec<(String, String)> = first
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        if values.is_empty() && !self.labels.is_empty() {
            pairs.push(("overflow".into(), "true".into()));
        } else {
            pairs.extend(
                self.labels
                    .iter()
                    .zip(values)
                    .map(|(l, v)| (l.name().to_string(), v.clone())),
            );
        }
        pairs
    }

    /// One histogram per label set, in seconds: bucket i ends at 2^i us,
    /// the last at +Inf (prometheus-client adds the buckets up).
    fn encode_waits(
        &self,
        encoder: &mut DescriptorEncoder,
        waits: &HashMap<Vec<String>, HistRow>,
    ) -> Result<(), std::fmt::Error> {
        let mut metric = encoder.encode_descriptor(
            "udptrace_receive_queue_seconds",
            "How long received UDP datagrams waited in their socket's receive queue, from UDP queueing each to the receive that took it",
            None,
            MetricType::Histogram,
        )?;
        let mut sets: Vec<(&Vec<String>, &HistRow)> = waits.iter().collect();
        sets.sort_by(|a, b| a.0.cmp(b.0));
        for (values, row) in sets {
            let buckets: Vec<(f64, u64)> = row
                .buckets
                .iter()
                .enumerate()
                .map(|(i, &n)| match i {
                    i if i + 1 == HIST_BUCKETS => (f64::INFINITY, n),
                    i => (bucket_upper_bound(i) as f64 / 1e6, n),
                })
                .collect();
            let labels = self.label_pairs(&[], values);
            metric
                .encode_family(&labels)?
                .encode_histogram::<Vec<(String, String)>>(
                    row.sum as f64 / 1e9,
                    row.count,
                    &buckets,
                    None,
                )?;
        }
        Ok(())
    }

    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut series: Vec<(&SeriesKey, &(u64, u64))> = self.series.iter().collect();
        series.sort_by(|a, b| a.0 .1.cmp(&b.0 .1));
        for family in Family::ALL {
            let (name, help) = family.describe();
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for ((measure, values), (events, bytes)) in &series {
                let Some(first) = family.labels(measure) else {
                    continue;
                };
                let value = if family == Family::Bytes {
                    bytes
                } else {
                    events
                };
                let labels = self.label_pairs(&first, values);
                ConstCounter::new(*value).encode(metric.encode_family(&labels)?)?;
            }
        }
        if let Some(waits) = &self.waits {
            self.encode_waits(&mut encoder, waits)?;
        }
        let stats = self.tracer.stats();
        if self.waits.is_some() {
            let c = ConstCounter::new(stats.wait_unknown);
            c.encode(encoder.encode_descriptor(
                "udptrace_receive_queue_unknown",
                "Receives not in udptrace_receive_queue_seconds: their datagram's wait is unknown (queued before tracing began, or its stamp was lost)",
                None,
                c.metric_type(),
            )?)?;
        }
        let counters = [
            (
                "udptrace_lost_events",
                "Events the kernel could not follow (kprobes: its table of calls in flight was full)",
                stats.lost,
            ),
            (
                "udptrace_kernel_table_full_events",
                "Events the kernel could not count: its table of keys was full between two reads",
                stats.count_full,
            ),
            (
                "udptrace_series_overflow_events",
                "Events counted in the overflow series: their label set came past --max-series",
                self.overflow_events,
            ),
        ];
        for (name, help, value) in counters {
            let c = ConstCounter::new(value);
            c.encode(encoder.encode_descriptor(name, help, None, c.metric_type())?)?;
        }
        let g = ConstGauge::new(self.label_sets.len() as i64);
        g.encode(encoder.encode_descriptor(
            "udptrace_series",
            "Label sets in use (at most --max-series, besides the overflow)",
            None,
            g.metric_type(),
        )?)?;
        let info = Info::new(vec![
            ("version".to_string(), env!("UDPTRACE_VERSION").to_string()),
            ("backend".to_string(), self.backend.clone()),
        ]);
        info.encode(encoder.encode_descriptor(
            "udptrace_build",
            "udptrace's version and the probe backend it runs",
            None,
            info.metric_type(),
        )?)
    }
}

/// The registry's view of the exporter: each scrape reads the kernel first.
#[derive(Clone)]
struct Scrape(Arc<Mutex<Exporter>>);

impl std::fmt::Debug for Scrape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Scrape")
    }
}

impl Collector for Scrape {
    fn encode(&self, encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut exporter = lock(&self.0);
        exporter.drain_or_warn();
        exporter.encode(encoder)
    }
}

/// How often the kernel's table is read between scrapes, so that it does not fill.
const DRAIN_EVERY: Duration = Duration::from_secs(1);
/// How often the server checks whether to stop.
const CHECK_EVERY: Duration = Duration::from_millis(200);

fn lock(exporter: &Mutex<Exporter>) -> std::sync::MutexGuard<'_, Exporter> {
    exporter.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn run(args: ServeArgs) -> Result<()> {
    // Bound first: a port in use fails before any probe is loaded.
    let listener = TcpListener::bind(args.listen)
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    listener
        .set_nonblocking(true)
        .context("setting up the listener")?;
    let local = listener
        .local_addr()
        .context("reading the listener's address")?;
    let web = match &args.web_config_file {
        Some(path) => web_config::load(path).map_err(anyhow::Error::msg)?,
        None => WebConfig {
            tls: None,
            auth: None,
        },
    };
    let open_files = http::raise_open_file_limit();
    let mut fields: Vec<CountField> = args
        .by
        .iter()
        .filter_map(|l| match l {
            Label::Key(f) => Some(*f),
            _ => None,
        })
        .collect();
    if args.by.iter().any(|l| !matches!(l, Label::Key(_))) {
        fields.push(CountField::Cgroup);
    }
    fields.extend([CountField::Event, CountField::Reason, CountField::Errno]);
    let kinds = vec![EventKind::Send, EventKind::Recv, EventKind::Drop];
    let mut builder = args.select.builder(kinds).count_by(fields.clone());
    if args.latency {
        builder = builder.histogram_beside_counts(Histogram::QueueWait);
    }
    let tracer = args.select.start(builder)?;
    let stop = tracer.stop_handle();
    let exporter = Arc::new(Mutex::new(Exporter::new(
        tracer,
        args.by.clone(),
        fields,
        args.max_series,
        args.latency,
    )));
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape(exporter.clone())));
    let server = Server::new(registry, web, http::max_connections(open_files));
    eprintln!(
        "Serving Prometheus metrics on {}://{local}/metrics",
        server.scheme()
    );
    let deadline = args.select.duration.map(|d| Instant::now() + d);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the HTTP server")?;
    let served: Result<()> = runtime.block_on(async {
        let listener =
            tokio::net::TcpListener::from_std(listener).context("starting the HTTP server")?;
        // Between scrapes, on a clock of its own: however often clients come.
        let drained = exporter.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(DRAIN_EVERY);
            loop {
                every.tick().await;
                let exporter = drained.clone();
                let _ = tokio::task::spawn_blocking(move || lock(&exporter).drain_or_warn()).await;
            }
        });
        loop {
            // Never waits for a scrape that holds the exporter: checked again soon.
            if let Ok(mut exporter) = exporter.try_lock() {
                // Counting delivers no event: this only notices a reader that stopped.
                let _ = exporter.tracer.recv_timeout(Duration::ZERO);
                if exporter.tracer.stop_requested() || exporter.tracer.is_finished() {
                    return Ok(());
                }
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(());
            }
            match tokio::time::timeout(CHECK_EVERY, listener.accept()).await {
                Ok(Ok((stream, _))) => server.accepted(stream),
                // Out of file descriptors and the like: let it pass.
                Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
                Err(_) => {}
            }
        }
    });
    stop.stop();
    served?;
    let exporter = lock(&exporter);
    if let Some(err) = exporter.tracer.error() {
        anyhow::bail!("tracing stopped early: {err}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_parse_by_name() {
        assert_eq!(parse_label("comm"), Ok(Label::Key(CountField::Comm)));
        assert_eq!(parse_label("pod_uid"), Ok(Label::PodUid));
        assert!(parse_label("event")
            .unwrap_err()
            .contains("unknown label 'event'"));
        assert!(parse_max_series("0").is_err());
        assert!(parse_listen("localhost").is_err());
        assert_eq!(parse_listen("[::1]:80"), Ok("[::1]:80".parse().unwrap()));
    }
}
