//! The udptrace_* C API: explicit handles, filters, timeouts, status codes,
//! lost-event counts and a richer event than the legacy struct.

use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};
use std::net::IpAddr;
use std::ptr;
use std::sync::Mutex;
use std::time::Duration;

use udptrace::{
    parse_addr_filter, Backend, CgroupResolver, Event, EventKind, Family, Filter, StatsReader,
    StopHandle, Tracer,
};

use crate::copy_cstr;

/// `udptrace_next` returned an event.
pub const UDPTRACE_EVENT: i32 = 0;
/// `udptrace_next` waited `timeout_ms` without an event.
pub const UDPTRACE_TIMEOUT: i32 = 1;
/// The tracer stopped (`udptrace_stop`) and every event was delivered.
pub const UDPTRACE_FINISHED: i32 = 2;
/// A NULL or invalid argument; see `udptrace_last_error`.
pub const UDPTRACE_EINVAL: i32 = -1;

/// Event kinds, for `udptrace_event.kind` and as bits `1 << kind` of
/// `udptrace_config.event_mask`.
pub const UDPTRACE_SEND: u32 = 1;
pub const UDPTRACE_RECV: u32 = 2;
pub const UDPTRACE_CONNECT: u32 = 3;
pub const UDPTRACE_CLOSE: u32 = 4;

/// The bits of `udptrace_config.event_mask` that name a kind.
const KIND_BITS: u32 =
    1 << UDPTRACE_SEND | 1 << UDPTRACE_RECV | 1 << UDPTRACE_CONNECT | 1 << UDPTRACE_CLOSE;

/// What to trace. Zero / NULL fields mean "no filter"; zero the struct first.
#[repr(C)]
pub struct udptrace_config {
    /// Only this process id.
    pub pid: u32,
    /// Only this port, on either side.
    pub port: u16,
    /// 0 for both, 4 or 6 for one address family (of the socket).
    pub family: u8,
    /// Bits `1 << UDPTRACE_SEND` etc.; 0 for every kind.
    pub event_mask: u32,
    /// Only threads with this name (NUL-terminated, at most 15 bytes), or NULL.
    pub comm: *const c_char,
    /// Only traffic with an address in this network on either side
    /// ("10.0.0.0/8", "::1"), or NULL.
    pub addr: *const c_char,
    /// "fentry", "kprobe" or "tracepoint", or NULL / "auto" for the best the kernel runs.
    pub backend: *const c_char,
}

/// One event.
#[repr(C)]
pub struct udptrace_event {
    /// Wall-clock time, ns since the Unix epoch.
    pub ts_ns: u64,
    /// The kernel's socket cookie: one id per socket.
    pub sock: u64,
    /// cgroup v2 id of the task.
    pub cgroup: u64,
    /// The socket's counters, this event included.
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub tx_packets: u64,
    /// Process (thread group) id, thread id, user id.
    pub pid: u32,
    pub tid: u32,
    pub uid: u32,
    /// UDPTRACE_SEND, UDPTRACE_RECV, UDPTRACE_CONNECT or UDPTRACE_CLOSE.
    pub kind: u32,
    /// Bytes of this datagram (send/recv), 0 (connect/close), or -errno for a failed call.
    pub ret: i32,
    /// 4 or 6: the socket's family.
    pub family: u8,
    pub _pad: u8,
    /// Ports, host byte order.
    pub lport: u16,
    pub rport: u16,
    pub _pad2: u16,
    /// Addresses in network byte order: 4 bytes for family 4, 16 for 6
    /// (an IPv6 socket talking to an IPv4 peer holds an IPv4-mapped address).
    pub laddr: [u8; 16],
    pub raddr: [u8; 16],
    /// Name of the calling thread, NUL-terminated.
    pub comm: [c_char; 16],
}

/// One event and where it happened, for `udptrace_next_ex`.
#[repr(C)]
pub struct udptrace_event_ex {
    pub event: udptrace_event,
    /// The network namespace it happened in (its inode number, as
    /// `ls -l /proc/PID/ns/net` shows it); 0 if unknown.
    pub netns: u32,
    pub _pad: u32,
    /// The container (64 hex digits) and Kubernetes pod UID the task's
    /// cgroup shows, NUL-terminated; empty where it shows none.
    pub container_id: [c_char; 65],
    pub pod_uid: [c_char; 37],
    pub _pad2: [u8; 2],
}

/// Counts since the tracer started.
#[repr(C)]
pub struct udptrace_stats {
    /// Events delivered, by kind: index UDPTRACE_SEND - 1 .. UDPTRACE_CLOSE - 1.
    pub events: [u64; 4],
    /// Events the kernel could not queue (the consumer fell behind).
    pub lost: u64,
    /// Receives that failed with EAGAIN, counted but not delivered.
    pub recv_eagain: u64,
    /// MSG_PEEK receives (the datagram stays queued), counted but not delivered.
    pub recv_peek: u64,
}

/// What the kernel counted instead of reporting, beside lost events (which
/// `udptrace_stats` has). Like events, only what the filters select.
#[repr(C)]
pub struct udptrace_shortfalls {
    /// connect() calls that failed: the socket did not connect, so no event.
    pub connect_failed: u64,
    /// connect() calls not followed, so not reported: the kernel's table of
    /// pending connects was full.
    pub connect_full: u64,
    /// Events whose socket found no room in the kernel's socket table: their
    /// counters are zero.
    pub counters_full: u64,
}

/// An open tracer.
pub struct udptrace_handle {
    tracer: Mutex<Tracer>,
    /// Outside the mutex, so neither a stop nor the stats wait for a blocked
    /// udptrace_next.
    stop: StopHandle,
    stats: StatsReader,
    backend: CString,
    probes: Vec<CString>,
    /// For `udptrace_cgroup_path`.
    cgroups: Mutex<CgroupResolver>,
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_error(msg: impl std::fmt::Display) {
    let text = CString::new(msg.to_string().replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = text);
}

/// The last error of a udptrace_* call on this thread, as one line of text
/// ("" if none). Valid until the next failing call on this thread.
#[no_mangle]
pub extern "C" fn udptrace_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

/// # Safety
/// `p` is NULL or a NUL-terminated string.
unsafe fn opt_str(p: *const c_char, what: &str) -> Result<Option<String>, String> {
    if p.is_null() {
        return Ok(None);
    }
    CStr::from_ptr(p)
        .to_str()
        .map(|s| Some(s.to_owned()))
        .map_err(|_| format!("{what} is not UTF-8"))
}

/// # Safety
/// The string fields of `cfg` are NULL or NUL-terminated.
unsafe fn config_to_builder(cfg: &udptrace_config) -> Result<udptrace::TracerBuilder, String> {
    let mut filter = Filter {
        pid: (cfg.pid != 0).then_some(cfg.pid),
        port: (cfg.port != 0).then_some(cfg.port),
        comm: opt_str(cfg.comm, "comm")?,
        ..Default::default()
    };
    filter.family = match cfg.family {
        0 => None,
        4 => Some(Family::V4),
        6 => Some(Family::V6),
        other => return Err(format!("family must be 0, 4 or 6, not {other}")),
    };
    if let Some(addr) = opt_str(cfg.addr, "addr")? {
        filter.addr = Some(parse_addr_filter(&addr).map_err(|e| e.to_string())?);
    }
    if cfg.event_mask & !KIND_BITS != 0 {
        return Err(format!("event_mask {:#x} has unknown bits", cfg.event_mask));
    }
    filter.kinds = EventKind::ALL
        .into_iter()
        .zip([
            UDPTRACE_SEND,
            UDPTRACE_RECV,
            UDPTRACE_CONNECT,
            UDPTRACE_CLOSE,
        ])
        .filter(|(_, bit)| cfg.event_mask & (1 << bit) != 0)
        .map(|(k, _)| k)
        .collect();
    let mut builder = Tracer::builder().filter(filter);
    match opt_str(cfg.backend, "backend")?.as_deref() {
        None | Some("auto") => {}
        Some(name) => builder = builder.backend(name.parse::<Backend>()?),
    }
    Ok(builder)
}

/// Starts a tracer; returns once every probe is attached. NULL `cfg` traces
/// everything. Returns NULL on error, with the reason in `udptrace_last_error()`.
///
/// # Safety
/// `cfg` is NULL or points to a valid `udptrace_config`.
#[no_mangle]
pub unsafe extern "C" fn udptrace_open(cfg: *const udptrace_config) -> *mut udptrace_handle {
    let builder = match cfg.as_ref() {
        None => Ok(Tracer::builder()),
        Some(cfg) => config_to_builder(cfg),
    };
    let started = builder.and_then(|b| b.start().map_err(|e| e.to_string()));
    match started {
        Ok(tracer) => {
            let backend = CString::new(tracer.backend().name()).unwrap_or_default();
            let probes = tracer
                .probes()
                .iter()
                .map(|p| CString::new(p.as_str()).unwrap_or_default())
                .collect();
            let stop = tracer.stop_handle();
            let stats = tracer.stats_reader();
            Box::into_raw(Box::new(udptrace_handle {
                tracer: Mutex::new(tracer),
                stop,
                stats,
                backend,
                probes,
                cgroups: Mutex::new(CgroupResolver::new()),
            }))
        }
        Err(e) => {
            set_error(e);
            ptr::null_mut()
        }
    }
}

fn to_c_event(ev: &Event) -> udptrace_event {
    let octets = |ip: IpAddr| {
        let mut out = [0u8; 16];
        match ip {
            IpAddr::V4(a) => out[..4].copy_from_slice(&a.octets()),
            IpAddr::V6(a) => out = a.octets(),
        }
        out
    };
    // SAFETY: all-zero is a valid udptrace_event.
    let mut out: udptrace_event = unsafe { std::mem::zeroed() };
    out.ts_ns = ev.ts_ns;
    out.sock = ev.sock;
    out.cgroup = ev.cgroup;
    out.rx_bytes = ev.counters.rx_bytes;
    out.tx_bytes = ev.counters.tx_bytes;
    out.rx_packets = ev.counters.rx_packets;
    out.tx_packets = ev.counters.tx_packets;
    out.pid = ev.pid;
    out.tid = ev.tid;
    out.uid = ev.uid;
    out.kind = match ev.kind {
        EventKind::Send => UDPTRACE_SEND,
        EventKind::Recv => UDPTRACE_RECV,
        EventKind::Connect => UDPTRACE_CONNECT,
        EventKind::Close => UDPTRACE_CLOSE,
        // This API only asks for socket events (its event_mask has no other bits).
        _ => 0,
    };
    out.ret = ev.ret;
    out.family = ev.family.number();
    out.lport = ev.local.port();
    out.rport = ev.remote.port();
    out.laddr = octets(ev.local.ip());
    out.raddr = octets(ev.remote.ip());
    copy_cstr(&mut out.comm, ev.comm.as_bytes());
    out
}

/// Waits up to `timeout_ms` (negative: forever) for the next event of `h`.
fn next_event(h: &udptrace_handle, timeout_ms: i32) -> Result<Event, i32> {
    let mut tracer = h.tracer.lock().unwrap_or_else(|p| p.into_inner());
    let forever = timeout_ms < 0;
    let mut left = Duration::from_millis(timeout_ms.max(0) as u64);
    loop {
        let wait = if forever {
            Duration::from_millis(500)
        } else {
            left
        };
        if let Some(ev) = tracer.recv_timeout(wait) {
            return Ok(ev);
        }
        if tracer.is_finished() {
            return Err(UDPTRACE_FINISHED);
        }
        if !forever {
            left = left.saturating_sub(wait);
            if left.is_zero() {
                return Err(UDPTRACE_TIMEOUT);
            }
        }
    }
}

/// Waits up to `timeout_ms` (negative: forever) for the next event and
/// writes it to `*event`. Returns UDPTRACE_EVENT, UDPTRACE_TIMEOUT,
/// UDPTRACE_FINISHED or UDPTRACE_EINVAL.
///
/// # Safety
/// `h` comes from `udptrace_open` and is not closed; `event` is writable.
#[no_mangle]
pub unsafe extern "C" fn udptrace_next(
    h: *mut udptrace_handle,
    event: *mut udptrace_event,
    timeout_ms: i32,
) -> i32 {
    let (Some(h), false) = (h.as_ref(), event.is_null()) else {
        set_error("udptrace_next: NULL handle or event");
        return UDPTRACE_EINVAL;
    };
    match next_event(h, timeout_ms) {
        Ok(ev) => {
            event.write(to_c_event(&ev));
            UDPTRACE_EVENT
        }
        Err(rc) => rc,
    }
}

/// `udptrace_next`, with where the event happened: its network namespace,
/// container and pod. `size` is `sizeof(udptrace_event_ex)` as the caller
/// knows it, so that later versions can grow the struct; no more than that
/// is written.
///
/// # Safety
/// `h` comes from `udptrace_open` and is not closed; `event` is writable
/// for `size` bytes.
#[no_mangle]
pub unsafe extern "C" fn udptrace_next_ex(
    h: *mut udptrace_handle,
    event: *mut udptrace_event_ex,
    size: usize,
    timeout_ms: i32,
) -> i32 {
    let (Some(h), false) = (h.as_ref(), event.is_null()) else {
        set_error("udptrace_next_ex: NULL handle or event");
        return UDPTRACE_EINVAL;
    };
    if size < std::mem::size_of::<udptrace_event>() {
        set_error("udptrace_next_ex: size is smaller than udptrace_event");
        return UDPTRACE_EINVAL;
    }
    let ev = match next_event(h, timeout_ms) {
        Ok(ev) => ev,
        Err(rc) => return rc,
    };
    // SAFETY: all-zero is a valid udptrace_event_ex.
    let mut out: udptrace_event_ex = std::mem::zeroed();
    out.event = to_c_event(&ev);
    out.netns = ev.netns;
    if let Some(info) = ev.cgroup_info.as_deref() {
        copy_cstr(
            &mut out.container_id,
            info.container_id.as_deref().unwrap_or("").as_bytes(),
        );
        copy_cstr(
            &mut out.pod_uid,
            info.pod_uid.as_deref().unwrap_or("").as_bytes(),
        );
    }
    let size = size.min(std::mem::size_of::<udptrace_event_ex>());
    ptr::copy_nonoverlapping(
        (&out as *const udptrace_event_ex).cast::<u8>(),
        event.cast::<u8>(),
        size,
    );
    UDPTRACE_EVENT
}

/// Writes the path of cgroup `cgroup` (an event's `cgroup`) below the
/// cgroup v2 mount, e.g. "/system.slice/nginx.service", into `buf` (of
/// `len` bytes), NUL-terminated and cut to fit. Returns the path's full
/// length (so a result of `len` or more means it was cut), or -1 if it
/// cannot be named: removed before this call, or udptrace may not open
/// cgroups by id (it lacks CAP_DAC_READ_SEARCH).
///
/// # Safety
/// `h` comes from `udptrace_open` and is not closed; `buf` is writable for
/// `len` bytes (or NULL with `len` 0, to ask for the length).
#[no_mangle]
pub unsafe extern "C" fn udptrace_cgroup_path(
    h: *const udptrace_handle,
    cgroup: u64,
    buf: *mut c_char,
    len: usize,
) -> i64 {
    let Some(h) = h.as_ref() else {
        set_error("udptrace_cgroup_path: NULL handle");
        return -1;
    };
    let info = h
        .cgroups
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .resolve(cgroup);
    let Some(info) = info else {
        set_error(format!("udptrace_cgroup_path: no cgroup {cgroup}"));
        return -1;
    };
    if !buf.is_null() && len > 0 {
        let dst = std::slice::from_raw_parts_mut(buf, len);
        copy_cstr(dst, info.path.as_bytes());
    }
    info.path.len() as i64
}

/// Fills `*stats`. Returns 0, or UDPTRACE_EINVAL. Never waits: safe to call
/// from another thread while one waits in `udptrace_next`.
///
/// # Safety
/// `h` comes from `udptrace_open` and is not closed; `stats` is writable.
#[no_mangle]
pub unsafe extern "C" fn udptrace_get_stats(
    h: *mut udptrace_handle,
    stats: *mut udptrace_stats,
) -> i32 {
    let (Some(h), false) = (h.as_ref(), stats.is_null()) else {
        set_error("udptrace_get_stats: NULL handle or stats");
        return UDPTRACE_EINVAL;
    };
    let s = h.stats.stats();
    stats.write(udptrace_stats {
        events: [
            EventKind::Send,
            EventKind::Recv,
            EventKind::Connect,
            EventKind::Close,
        ]
        .map(|k| s.events_of(k)),
        lost: s.lost,
        recv_eagain: s.recv_eagain,
        recv_peek: s.recv_peek,
    });
    0
}

/// Fills `*out` with what the kernel counted but could not report. Returns 0,
/// or UDPTRACE_EINVAL. Never waits, like `udptrace_get_stats`.
///
/// # Safety
/// `h` comes from `udptrace_open` and is not closed; `out` is writable.
#[no_mangle]
pub unsafe extern "C" fn udptrace_get_shortfalls(
    h: *mut udptrace_handle,
    out: *mut udptrace_shortfalls,
) -> i32 {
    let (Some(h), false) = (h.as_ref(), out.is_null()) else {
        set_error("udptrace_get_shortfalls: NULL handle or out");
        return UDPTRACE_EINVAL;
    };
    let s = h.stats.stats();
    out.write(udptrace_shortfalls {
        connect_failed: s.connect_failed,
        connect_full: s.connect_full,
        counters_full: s.counters_full,
    });
    0
}

/// Receives whose sender is unknown, of the tasks the filters select:
/// delivered with an unspecified remote address and port (and kept by an
/// address or port filter only when their local side matches). Only where
/// no hook reads the sender from the datagram (the tracepoint backend), when
/// the caller did not ask for the address and the socket had datagrams of
/// more than one sender pending, or existed before tracing began. 0 for a
/// NULL handle.
///
/// # Safety
/// `h` comes from `udptrace_open` and is not closed.
#[no_mangle]
pub unsafe extern "C" fn udptrace_recv_sender_unknown(h: *const udptrace_handle) -> u64 {
    h.as_ref()
        .map_or(0, |h| h.stats.stats().recv_sender_unknown)
}

/// The backend in use, e.g. "tracepoint"; valid until `udptrace_close`.
///
/// # Safety
/// `h` comes from `udptrace_open` and is not closed.
#[no_mangle]
pub unsafe extern "C" fn udptrace_backend(h: *const udptrace_handle) -> *const c_char {
    h.as_ref().map_or(ptr::null(), |h| h.backend.as_ptr())
}

/// The `index`th attached probe, e.g. "tp_btf/sock_send_length" or
/// "cgroup/connect4"; NULL past the last one. Valid until `udptrace_close`.
///
/// # Safety
/// `h` comes from `udptrace_open` and is not closed.
#[no_mangle]
pub unsafe extern "C" fn udptrace_probe(h: *const udptrace_handle, index: usize) -> *const c_char {
    h.as_ref()
        .and_then(|h| h.probes.get(index))
        .map_or(ptr::null(), |p| p.as_ptr())
}

/// Stops tracing: `udptrace_next` delivers what is queued, then returns
/// UDPTRACE_FINISHED. Safe to call from another thread than `udptrace_next`'s.
///
/// # Safety
/// `h` comes from `udptrace_open` and is not closed.
#[no_mangle]
pub unsafe extern "C" fn udptrace_stop(h: *mut udptrace_handle) {
    if let Some(h) = h.as_ref() {
        h.stop.stop();
    }
}

/// Detaches everything and frees the handle. NULL is ignored.
///
/// # Safety
/// `h` comes from `udptrace_open` and is not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn udptrace_close(h: *mut udptrace_handle) {
    if !h.is_null() {
        drop(Box::from_raw(h));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kind constants are public ABI, so they stay literal here; they
    /// must still be the kinds the BPF programs write (`enum udp_event_kind`).
    #[test]
    fn kind_constants_are_the_wire_kinds() {
        for (constant, kind) in [
            (UDPTRACE_SEND, EventKind::Send),
            (UDPTRACE_RECV, EventKind::Recv),
            (UDPTRACE_CONNECT, EventKind::Connect),
            (UDPTRACE_CLOSE, EventKind::Close),
        ] {
            assert_eq!(constant, u32::from(kind.wire()), "{kind}");
        }
        assert_eq!(KIND_BITS, 0x1e);
    }
}
