//! What `udptrace top` shows, whatever shows it: rows of counts by key or
//! by socket, sampled every interval from the kernel's tables, and their
//! sort orders. The batch and JSON output (mod.rs) and the live screen
//! (tui.rs) both draw from it.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::{json, Map, Value};
use udptrace::{CountField, CountValue, EventKind, Filter, HistRow, SocketInfo, Tracer};

use crate::count::{cell, json_value};
use crate::output::{escape_text, now_ns};
use crate::sockets::addr_text;

/// What rows are keyed by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopKeys {
    Fields(Vec<CountField>),
    Socket,
}

/// One row of an interval: its key and what it did in the interval.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Row {
    /// The key as the table shows it, one cell per key column.
    pub cells: Vec<String>,
    /// The key as JSON names it.
    pub json: Map<String, Value>,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub drops: u64,
    /// The reason of most of its drops.
    pub top_drop: Option<String>,
    /// Sockets: the receive queue's peak as a share of its buffer (0-1+).
    pub rcvq: Option<f64>,
    /// Keys: the 99th percentile of its receives' time in the queue, as
    /// the bound (us) of its histogram's bucket; None without receives of
    /// known wait.
    pub wait_p99_us: Option<u64>,
}

impl Row {
    fn datagrams(&self) -> u64 {
        self.rx_packets + self.tx_packets
    }
}

/// One interval's rows and totals.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    pub ts_ns: u64,
    pub seconds: f64,
    pub rows: Vec<Row>,
    pub lost: u64,
    /// Runs of a hook the kernel skipped in the interval: up to as many
    /// events missing from it.
    pub skipped: u64,
}

impl Sample {
    pub fn total(&self) -> Row {
        let mut t = Row::default();
        for r in &self.rows {
            t.rx_packets += r.rx_packets;
            t.rx_bytes += r.rx_bytes;
            t.tx_packets += r.tx_packets;
            t.tx_bytes += r.tx_bytes;
            t.drops += r.drops;
        }
        t
    }
}

/// Where the rows come from: the count table, or the socket table.
pub enum Source {
    Counts(Vec<CountField>),
    /// Each socket's counters at the last sample, to take differences.
    Sockets(HashMap<u64, SocketInfo>),
}

/// Columns the rows can be sorted by, in the order `s` cycles through them.
pub const SORT_COLUMNS: [&str; 5] = ["RX/s", "RXB/s", "TX/s", "TXB/s", "DROPS/s"];

/// The value of a row under sort column `i`.
pub fn sort_value(row: &Row, i: usize) -> u64 {
    match i {
        0 => row.rx_packets,
        1 => row.rx_bytes,
        2 => row.tx_packets,
        3 => row.tx_bytes,
        _ => row.drops,
    }
}

/// Busiest first by column `sort` (ties by all datagrams, then key);
/// `reverse` flips it.
pub fn sort_rows(rows: &mut [Row], sort: Option<usize>, reverse: bool) {
    rows.sort_by(|a, b| {
        let value = |r: &Row| (sort.map_or(0, |i| sort_value(r, i)), r.datagrams(), r.drops);
        value(b).cmp(&value(a)).then_with(|| a.cells.cmp(&b.cells))
    });
    if reverse {
        rows.reverse();
    }
}

pub struct Sampler {
    pub(super) tracer: Tracer,
    pub(super) source: Source,
    pub(super) filter: Filter,
    pub(super) last: Instant,
    pub(super) lost: u64,
    pub(super) skipped: u64,
}

impl Sampler {
    pub(super) fn backend_name(&self) -> &'static str {
        self.tracer.backend().name()
    }

    pub fn stop_requested(&self) -> bool {
        self.tracer.stop_requested()
    }

    /// What happened since the last sample, busiest first.
    pub fn sample(&mut self) -> Result<Sample> {
        let now = Instant::now();
        let seconds = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        let mut rows = match &mut self.source {
            Source::Counts(fields) => count_rows(&self.tracer, fields)?,
            Source::Sockets(last) => {
                // The sockets closed meanwhile, from their close events.
                let mut closed = Vec::new();
                while let Some(ev) = self.tracer.recv_timeout(Duration::ZERO) {
                    closed.extend(SocketInfo::closed_by(&ev));
                }
                socket_rows(&self.tracer, &self.filter, last, closed)?
            }
        };
        sort_rows(&mut rows, None, false);
        let stats = self.tracer.stats();
        let sample = Sample {
            ts_ns: now_ns(),
            seconds,
            rows,
            lost: stats.lost - self.lost,
            skipped: stats.skipped.saturating_sub(self.skipped),
        };
        self.lost = stats.lost;
        self.skipped = stats.skipped;
        Ok(sample)
    }
}

/// The count table's rows (keyed by `fields`, then event and reason) folded
/// into one row per key of `fields`.
fn count_rows(tracer: &Tracer, fields: &[CountField]) -> Result<Vec<Row>> {
    let mut by_key: BTreeMap<Vec<CountValue>, (Row, BTreeMap<String, u64>)> = BTreeMap::new();
    for r in tracer.take_counts()? {
        let (key, rest) = r.key.split_at(fields.len());
        let (row, reasons) = by_key.entry(key.to_vec()).or_insert_with(|| {
            let row = Row {
                cells: key.iter().map(cell).collect(),
                json: fields
                    .iter()
                    .zip(key)
                    .map(|(f, v)| (f.name().to_string(), json_value(v)))
                    .collect(),
                ..Default::default()
            };
            (row, BTreeMap::new())
        });
        match rest {
            [CountValue::Event(EventKind::Send), ..] => {
                row.tx_packets += r.events;
                row.tx_bytes += r.bytes;
            }
            [CountValue::Event(EventKind::Recv), ..] => {
                row.rx_packets += r.events;
                row.rx_bytes += r.bytes;
            }
            [CountValue::Event(EventKind::Drop), CountValue::Reason(reason)] => {
                row.drops += r.events;
                let reason = reason.clone().unwrap_or_else(|| "-".into());
                *reasons.entry(reason).or_default() += r.events;
            }
            _ => {}
        }
    }
    // Receives' waits, kept beside the counts under the same keys.
    let mut waits: BTreeMap<Vec<CountValue>, HistRow> = BTreeMap::new();
    for h in tracer.take_histograms()? {
        let key = h.key[..fields.len()].to_vec();
        match waits.get_mut(&key) {
            Some(w) => w.merge(&h),
            None => {
                waits.insert(key, h);
            }
        }
    }
    Ok(by_key
        .into_iter()
        .map(|(key, (mut row, reasons))| {
            row.top_drop = reasons
                .into_iter()
                .max_by_key(|(name, n)| (*n, std::cmp::Reverse(name.clone())))
                .map(|(name, _)| name);
            row.wait_p99_us = waits
                .get(&key)
                .filter(|w| w.count > 0)
                .map(|w| w.quantile_bound(0.99, w.max.div_ceil(1000)));
            row
        })
        .collect())
}

/// Each socket's traffic since the last sample: those open from the socket
/// table, and those `closed` meanwhile (the kernel filtered their events).
fn socket_rows(
    tracer: &Tracer,
    filter: &Filter,
    last: &mut HashMap<u64, SocketInfo>,
    closed: Vec<SocketInfo>,
) -> Result<Vec<Row>> {
    let open: Vec<SocketInfo> = tracer.sockets()?;
    let now: HashMap<u64, SocketInfo> = open
        .into_iter()
        .filter(|s| filter.keeps_socket(s))
        .chain(closed.iter().copied())
        .map(|s| (s.sock, s))
        .collect();
    let mut rows = Vec::new();
    for (sock, s) in &now {
        let before = last.get(sock);
        let was = |f: fn(&SocketInfo) -> u64| before.map_or(0, f);
        let c = &s.counters;
        let row = Row {
            cells: vec![
                s.pid.to_string(),
                escape_text(&s.comm.to_string_lossy()).into_owned(),
                addr_text(s.life.local),
            ],
            json: Map::from_iter([
                ("sock".to_string(), json!(sock)),
                ("pid".to_string(), json!(s.pid)),
                ("comm".to_string(), json!(s.comm.to_string_lossy())),
                ("laddr".to_string(), json!(s.life.local.map(|a| a.ip()))),
                ("lport".to_string(), json!(s.life.local.map(|a| a.port()))),
            ]),
            rx_packets: c.rx_packets - was(|b| b.counters.rx_packets),
            rx_bytes: c.rx_bytes - was(|b| b.counters.rx_bytes),
            tx_packets: c.tx_packets - was(|b| b.counters.tx_packets),
            tx_bytes: c.tx_bytes - was(|b| b.counters.tx_bytes),
            drops: s.life.drops - was(|b| b.life.drops),
            top_drop: top_socket_drop(
                s.life.drops - was(|b| b.life.drops),
                s.life.rcvbuf_drops - was(|b| b.life.rcvbuf_drops),
            ),
            rcvq: (s.life.rcvbuf > 0)
                .then(|| f64::from(s.life.peak_queued) / f64::from(s.life.rcvbuf)),
            wait_p99_us: None,
        };
        // Sockets that did nothing this interval stay off the screen.
        if row.datagrams() > 0 || row.drops > 0 {
            rows.push(row);
        }
    }
    // A closed socket's last interval is shown; it has no next one.
    *last = now;
    for s in &closed {
        last.remove(&s.sock);
    }
    Ok(rows)
}

/// A socket's table tells its receive-buffer drops from the others, whose
/// reasons it does not keep.
fn top_socket_drop(drops: u64, rcvbuf_drops: u64) -> Option<String> {
    match drops {
        0 => None,
        _ if rcvbuf_drops * 2 >= drops => Some("SOCKET_RCVBUFF".into()),
        _ => Some("other".into()),
    }
}

/// The key columns' headers.
pub fn key_headers(by: &TopKeys) -> Vec<String> {
    match by {
        TopKeys::Fields(fields) => fields.iter().map(|f| f.name().to_uppercase()).collect(),
        TopKeys::Socket => vec!["PID".into(), "COMM".into(), "LOCAL".into()],
    }
}

/// Each key column as wide as its header and its widest cell.
pub fn key_widths(headers: &[String], rows: &[Row]) -> Vec<usize> {
    headers
        .iter()
        .enumerate()
        .map(|(i, h)| {
            rows.iter()
                .map(|r| r.cells.get(i).map_or(0, |c| c.chars().count()))
                .chain([h.len()])
                .max()
                .unwrap_or(0)
        })
        .collect()
}
