//! udptrace: system-wide UDP tracing with eBPF.
//!
//! ```no_run
//! use std::time::Duration;
//! use udptrace::{Filter, Tracer};
//!
//! let mut tracer = Tracer::builder()
//!     .filter(Filter { port: Some(53), ..Default::default() })
//!     .start()?;
//! while let Some(ev) = tracer.recv_timeout(Duration::from_secs(1)) {
//!     println!("{} {} {} -> {} {:?}", ev.pid, ev.kind, ev.local, ev.remote, ev.bytes());
//! }
//! println!("lost: {}", tracer.stats().lost);
//! # Ok::<(), udptrace::Error>(())
//! ```

mod bpf {
    #![allow(clippy::all, unused_imports, non_camel_case_types, dead_code)]
    include!(concat!(env!("OUT_DIR"), "/udptrace.skel.rs"));
}

// The rooms, by concern; the API and the basics stay at the root.
mod attribution;
mod decode;
mod engine;
mod model;
mod state;

mod builder;
mod clock;
mod error;
pub mod sys;
mod tracer;

// Each module by its short name, wherever its room: `crate::event`, ...
use attribution::cgroups;
use engine::{backend, features, load, merge, reader, seed, settings, sock_diag, wakeup};
use model::{count, drop_reason, errno, event, family, filter, hist, life};
use state::{count_table, hist_table, sockets, stats};

pub use decode::{dns, pcapng, quic};
pub use engine::doctor;

pub use backend::Backend;
pub use builder::TracerBuilder;
pub use cgroups::{
    check_cgroup_path, check_container_prefix, container_id_in, pod_uid_in, CgroupInfo,
    CgroupResolver, CGROUP_CACHE_SIZE,
};
pub use count::{sort_rows, CountField, CountRow, CountValue, COUNT_SLOTS_PER_CPU};
pub use drop_reason::drop_reason_name;
pub use errno::{errno_name, errno_text};
pub use error::Error;
pub use event::{Comm, Event, EventKind, Family, Packet, SockCounters};
pub use features::kernel_limits;
pub use filter::{check_comm, check_netns, parse_addr_filter, parse_netns, Filter};
pub use hist::{bucket_upper_bound, sort_hist_rows, HistRow, Histogram, HIST_BUCKETS};
pub use ipnet::IpNet;
pub use life::SockLife;
pub use sockets::SocketInfo;
pub use stats::{Stats, StatsReader};
pub use tracer::{StopHandle, Tracer};

/// The most UDP payload bytes a packet event can carry
/// ([`TracerBuilder::snaplen`]): a whole datagram.
pub const MAX_SNAPLEN: u32 = 65535;
