//! What the kernel keeps between events, read from user space: the socket
//! table, the count table and its per-CPU slots, the histograms, and the
//! statistics.

pub(crate) mod count_table;
pub(crate) mod hist_table;
pub(crate) mod sockets;
pub(crate) mod stats;
