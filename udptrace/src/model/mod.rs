//! The event model: decoded events and their parts (families, drop
//! reasons, errnos, a socket's life), the filters that select them, and
//! count keys, rows and histograms.

pub(crate) mod count;
pub(crate) mod drop_reason;
pub(crate) mod errno;
pub(crate) mod event;
pub(crate) mod family;
pub(crate) mod filter;
pub(crate) mod hist;
pub(crate) mod life;
