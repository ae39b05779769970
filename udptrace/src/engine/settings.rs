//! What a tracer is asked to do: the settings a
//! [`TracerBuilder`](crate::TracerBuilder) collects, which the loader writes
//! into the programs and the reader follows. Below the builder, so that
//! neither imports it.

use std::time::Duration;

use crate::backend::Backend;
use crate::cgroups::CgroupTarget;
use crate::count::CountField;
use crate::filter::Filter;
use crate::hist::Histogram;

/// What a tracer is asked to do, as its builder collects it.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) filter: Filter,
    pub(crate) backend: Option<Backend>,
    pub(crate) ring_buffer_bytes: Option<u32>,
    /// Set by the caller, or the default for the record size and ring.
    pub(crate) wakeup_bytes: Option<u64>,
    pub(crate) drain_interval: Duration,
    pub(crate) report_eagain: bool,
    pub(crate) count_by: Option<Vec<CountField>>,
    /// Histograms instead of counts, keyed by `count_by`.
    pub(crate) histogram: Option<Histogram>,
    /// Events are counted beside the histogram, not instead.
    pub(crate) histogram_beside_counts: bool,
    pub(crate) socket_table_size: Option<u32>,
    pub(crate) count_table_size: Option<u32>,
    pub(crate) assume_missing: Vec<String>,
    pub(crate) track_sockets: bool,
    pub(crate) track_receive_buffers: bool,
    /// Each socket's life keeps its receives' waits.
    pub(crate) track_waits: bool,
    pub(crate) snaplen: u32,
    /// The filter's cgroup or container, found at start.
    pub(crate) cgroup_target: Option<CgroupTarget>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            filter: Filter::default(),
            backend: None,
            ring_buffer_bytes: None,
            wakeup_bytes: None,
            drain_interval: Duration::from_millis(10),
            report_eagain: false,
            count_by: None,
            histogram: None,
            histogram_beside_counts: false,
            socket_table_size: None,
            count_table_size: None,
            assume_missing: Vec::new(),
            cgroup_target: None,
            track_sockets: false,
            track_receive_buffers: false,
            track_waits: false,
            snaplen: 0,
        }
    }
}
