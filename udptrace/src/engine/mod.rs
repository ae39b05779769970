//! Loading and running the programs: the backends and what each kernel
//! supports, the settings written into the programs, seeding the sockets
//! that exist as tracing starts, and the reader thread that drains the ring
//! buffers in time order.

pub(crate) mod backend;
pub mod doctor;
pub(crate) mod features;
pub(crate) mod load;
pub(crate) mod merge;
pub(crate) mod reader;
pub(crate) mod seed;
pub(crate) mod settings;
pub(crate) mod sock_diag;
pub(crate) mod wakeup;
