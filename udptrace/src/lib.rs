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

mod backend;
mod bpf {
    #![allow(clippy::all, unused_imports, non_camel_case_types, dead_code)]
    include!(concat!(env!("OUT_DIR"), "/udptrace.skel.rs"));
}
mod builder;
mod cgroups;
mod clock;
mod count;
mod count_table;
pub mod dns;
pub mod doctor;
mod drop_reason;
mod errno;
mod error;
mod event;
mod features;
mod filter;
mod load;
mod merge;
pub mod pcapng;
pub mod quic;
mod reader;
mod seed;
mod sock_diag;
mod sockets;
mod stats;
pub mod sys;
mod tracer;
mod wakeup;

pub use backend::Backend;
pub use builder::TracerBuilder;
pub use cgroups::{container_id_in, pod_uid_in, CgroupInfo, CgroupResolver, CGROUP_CACHE_SIZE};
pub use count::{sort_rows, CountField, CountRow, CountValue, COUNT_SLOTS_PER_CPU};
pub use drop_reason::drop_reason_name;
pub use errno::{errno_name, errno_text};
pub use error::Error;
pub use event::{Comm, Event, EventKind, Family, Packet, SockCounters};
pub use features::kernel_limits;
pub use filter::{
    check_cgroup_path, check_comm, check_container_prefix, check_netns, parse_addr_filter,
    parse_netns, Filter,
};
pub use ipnet::IpNet;
pub use sockets::{SockLife, SocketInfo};
pub use stats::{Stats, StatsReader};
pub use tracer::{StopHandle, Tracer};

/// The most UDP payload bytes a packet event can carry
/// ([`TracerBuilder::snaplen`]): a whole datagram.
pub const MAX_SNAPLEN: u32 = 65535;
