//! `udptrace top`'s live screen (ratatui): totals, the rows as rates, and
//! keys to sort, reverse, pause and quit.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Alignment, Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Cell, Paragraph, Row as TableRow, Table};
use ratatui::Frame;

use super::sample::{key_headers, key_widths, sort_rows, Sample, Sampler, TopKeys, SORT_COLUMNS};
use crate::output::{local_time, now_ns};

pub struct View {
    headers: Vec<String>,
    socket: bool,
    /// The p99 wait column (`--latency`).
    waits: bool,
    backend: &'static str,
    interval: Duration,
    /// A column of SORT_COLUMNS, or all datagrams.
    sort: Option<usize>,
    reverse: bool,
    paused: bool,
    /// Only this many rows, the first in the order shown.
    top: Option<usize>,
    sample: Sample,
}

impl View {
    pub fn new(
        by: &TopKeys,
        backend: &'static str,
        interval: Duration,
        top: Option<usize>,
        waits: bool,
    ) -> View {
        View {
            headers: key_headers(by),
            socket: *by == TopKeys::Socket,
            waits,
            backend,
            interval,
            sort: None,
            reverse: false,
            paused: false,
            top,
            sample: Sample {
                ts_ns: now_ns(),
                ..Default::default()
            },
        }
    }

    /// Applies a key; false when it quits.
    fn key(&mut self, code: KeyCode, modifiers: KeyModifiers) -> bool {
        match code {
            KeyCode::Char('q') | KeyCode::Esc => return false,
            KeyCode::Char('c') if modifiers.contains(KeyModifiers::CONTROL) => return false,
            KeyCode::Char('s') | KeyCode::Right => {
                self.sort = match self.sort {
                    None => Some(0),
                    Some(i) if i + 1 < SORT_COLUMNS.len() => Some(i + 1),
                    Some(_) => None,
                }
            }
            KeyCode::Left => {
                self.sort = match self.sort {
                    None => Some(SORT_COLUMNS.len() - 1),
                    Some(0) => None,
                    Some(i) => Some(i - 1),
                }
            }
            KeyCode::Char('r') => self.reverse = !self.reverse,
            KeyCode::Char('p') | KeyCode::Char(' ') => self.paused = !self.paused,
            _ => {}
        }
        sort_rows(&mut self.sample.rows, self.sort, self.reverse);
        true
    }

    fn show(&mut self, sample: Sample) {
        if !self.paused {
            self.sample = sample;
            sort_rows(&mut self.sample.rows, self.sort, self.reverse);
        }
    }

    fn render(&self, frame: &mut Frame) {
        let [title, totals, table, help] = Layout::vertical([
            Constraint::Length(1),
            Constraint::Length(1),
            Constraint::Min(1),
            Constraint::Length(1),
        ])
        .areas(frame.area());
        let s = &self.sample;
        let secs = s.seconds.max(1e-9);
        let rate = |n: u64| n as f64 / secs;
        frame.render_widget(
            Paragraph::new(format!(
                "udptrace top - {} backend - every {} s - {}{}",
                self.backend,
                self.interval.as_secs_f64(),
                local_time(s.ts_ns),
                if self.paused { " - PAUSED" } else { "" }
            )),
            title,
        );
        let t = s.total();
        frame.render_widget(
            Paragraph::new(format!(
                "Total: RX {:.1}/s ({}/s)  TX {:.1}/s ({}/s)  drops {:.1}/s  lost {}  rows {}",
                rate(t.rx_packets),
                bytes(rate(t.rx_bytes)),
                rate(t.tx_packets),
                bytes(rate(t.tx_bytes)),
                rate(t.drops),
                s.lost,
                s.rows.len()
            )),
            totals,
        );

        let mut header: Vec<String> = self.headers.clone();
        for (i, name) in SORT_COLUMNS.iter().enumerate() {
            header.push(if self.sort == Some(i) {
                format!("[{name}]")
            } else {
                name.to_string()
            });
        }
        header.push("TOP_DROP".into());
        if self.socket {
            header.push("RCVQ%".into());
        } else if self.waits {
            header.push("WAIT_P99(us)".into());
        }
        let shown = &s.rows[..self.top.unwrap_or(usize::MAX).min(s.rows.len())];
        let rows = shown.iter().map(|r| {
            let mut cells: Vec<String> = r.cells.clone();
            cells.extend([
                format!("{:.1}", rate(r.rx_packets)),
                bytes(rate(r.rx_bytes)),
                format!("{:.1}", rate(r.tx_packets)),
                bytes(rate(r.tx_bytes)),
                format!("{:.1}", rate(r.drops)),
                r.top_drop.clone().unwrap_or_else(|| "-".into()),
            ]);
            if let Some(q) = r.rcvq {
                cells.push(format!("{:.1}", q * 100.0));
            }
            if self.waits {
                cells.push(super::p99_cell(r.wait_p99_us));
            }
            let keys = r.cells.len();
            TableRow::new(
                cells
                    .into_iter()
                    .enumerate()
                    .map(|(i, c)| cell(c, i >= keys && i < keys + SORT_COLUMNS.len())),
            )
        });
        let mut widths: Vec<Constraint> = key_widths(&self.headers, &s.rows)
            .into_iter()
            .map(|w| Constraint::Length(w as u16))
            .collect();
        widths.extend([Constraint::Length(10); 5]);
        widths.push(Constraint::Length(16));
        if self.socket {
            widths.push(Constraint::Length(6));
        } else if self.waits {
            widths.push(Constraint::Length(12));
        }
        let keys = self.headers.len();
        let header = TableRow::new(
            header
                .into_iter()
                .enumerate()
                .map(|(i, h)| cell(h, i >= keys && i < keys + SORT_COLUMNS.len())),
        )
        .style(Style::default().add_modifier(Modifier::REVERSED));
        frame.render_widget(Table::new(rows, widths).header(header), table);
        let order = match (self.sort, self.reverse) {
            (None, false) => "sorted by datagrams".to_string(),
            (None, true) => "sorted by datagrams, reversed".to_string(),
            (Some(i), r) => format!(
                "sorted by {}{}",
                SORT_COLUMNS[i],
                if r { ", reversed" } else { "" }
            ),
        };
        frame.render_widget(
            Paragraph::new(Line::from(format!(
                "{order} | s/->: next sort column  <-: previous  r: reverse  p/space: pause  q: quit"
            ))),
            help,
        );
    }
}

/// A table cell; numbers right-aligned.
fn cell(text: String, number: bool) -> Cell<'static> {
    let line = Line::from(text);
    Cell::from(if number {
        line.alignment(Alignment::Right)
    } else {
        line
    })
}

/// Bytes per second with a unit: 512, 1.5K, 12.0M.
fn bytes(v: f64) -> String {
    match v {
        v if v >= 1e9 => format!("{:.1}G", v / 1e9),
        v if v >= 1e6 => format!("{:.1}M", v / 1e6),
        v if v >= 1e3 => format!("{:.1}K", v / 1e3),
        v => format!("{v:.0}"),
    }
}

/// Runs the screen until `q`, Ctrl-C, a stop signal or the deadline.
pub fn run(
    mut view: View,
    sampler: &mut Sampler,
    deadline: Option<Instant>,
    interval: Duration,
) -> Result<()> {
    let mut terminal = ratatui::try_init().context("setting up the terminal")?;
    let result = (|| -> Result<()> {
        let mut next = Instant::now() + interval;
        loop {
            terminal.draw(|f| view.render(f))?;
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) || sampler.stop_requested() {
                return Ok(());
            }
            // Keys and resizes redraw at once; otherwise the next sample does.
            if event::poll(next.saturating_duration_since(now))? {
                if let Event::Key(k) = event::read()? {
                    if k.kind == KeyEventKind::Press && !view.key(k.code, k.modifiers) {
                        return Ok(());
                    }
                }
            }
            if Instant::now() >= next {
                view.show(sampler.sample()?);
                next += interval;
            }
        }
    })();
    ratatui::try_restore().context("restoring the terminal")?;
    result
}
