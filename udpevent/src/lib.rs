//! libudpEvent: the C face of udptrace.
//!
//! Two APIs over the same engine:
//! - [`legacy`]: a drop-in, ABI-compatible replacement for the BCC-based UDP
//!   Event API (`AddProbe`, `setupBPF`, `DequeuePerfEvent`, `getStatus`,
//!   `cleanup`) and its packed 190-byte `struct udp_event_t`;
//! - [`v2`]: the `udptrace_*` functions: handles, filters, timeouts, status
//!   codes, lost-event counts, and a richer event.
//!
//! `include/udpEvent.h` is generated from this crate by cbindgen (a test fails
//! when it is stale).
#![allow(non_camel_case_types, non_snake_case)]

pub mod legacy;
pub mod v2;

/// Copies `text` into a C char array, truncating, always NUL-terminated.
fn copy_cstr(dst: &mut [libc::c_char], text: &[u8]) {
    let n = text.len().min(dst.len().saturating_sub(1));
    for (d, s) in dst.iter_mut().zip(&text[..n]) {
        *d = *s as libc::c_char;
    }
    for d in &mut dst[n..] {
        *d = 0;
    }
}
