//! The v2 API's argument checking, driven as C drives it: whatever a
//! `udptrace_config` holds (strings that are not UTF-8, too long, empty or
//! NULL; any pid, port, family or event mask), `udptrace_open` returns a
//! handle, or NULL with a one-line reason. A panic here would abort the
//! process: a Rust panic cannot cross `extern "C"`.

use std::ffi::{c_char, CStr, CString};
use std::ptr;

use proptest::prelude::*;
use udpEvent::v2::*;

/// A config's contents; the strings are C strings (no NUL inside).
#[derive(Debug, Clone)]
struct Config {
    pid: u32,
    port: u16,
    family: u8,
    event_mask: u32,
    comm: Option<Vec<u8>>,
    addr: Option<Vec<u8>>,
    backend: Option<Vec<u8>>,
}

const KIND_BITS: u32 =
    (1 << UDPTRACE_SEND) | (1 << UDPTRACE_RECV) | (1 << UDPTRACE_CONNECT) | (1 << UDPTRACE_CLOSE);

/// Opens `cfg` as a C caller would: `Ok(handle)` or `Err(last_error)`.
fn open(cfg: &Config) -> Result<*mut udptrace_handle, String> {
    let c_string = |s: &Option<Vec<u8>>| s.clone().map(|b| CString::new(b).unwrap());
    let (comm, addr, backend) = (
        c_string(&cfg.comm),
        c_string(&cfg.addr),
        c_string(&cfg.backend),
    );
    let as_ptr = |s: &Option<CString>| s.as_ref().map_or(ptr::null(), |s| s.as_ptr());
    let raw = udptrace_config {
        pid: cfg.pid,
        port: cfg.port,
        family: cfg.family,
        event_mask: cfg.event_mask,
        comm: as_ptr(&comm),
        addr: as_ptr(&addr),
        backend: as_ptr(&backend),
    };
    // SAFETY: the strings live until the call returns.
    let h = unsafe { udptrace_open(&raw) };
    if h.is_null() {
        // SAFETY: udptrace_last_error always returns a valid C string.
        let err = unsafe { CStr::from_ptr(udptrace_last_error()) };
        Err(err.to_string_lossy().into_owned())
    } else {
        Ok(h)
    }
}

/// Bytes as C strings can hold them: anything but NUL, sometimes not UTF-8.
fn c_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(1u8..=255, 0..max)
}

fn is_valid_addr(bytes: &[u8]) -> bool {
    std::str::from_utf8(bytes).is_ok_and(|s| udptrace::parse_addr_filter(s).is_ok())
}

/// Something wrong with one field, or a valid config when `None`.
#[derive(Debug, Clone)]
enum Defect {
    Family(u8),
    EventMask(u32),
    Comm(Vec<u8>),
    Addr(Vec<u8>),
    Backend(Vec<u8>),
}

fn defect() -> impl Strategy<Value = Defect> {
    prop_oneof![
        any::<u8>()
            .prop_filter("not 0, 4 or 6", |f| ![0, 4, 6].contains(f))
            .prop_map(Defect::Family),
        any::<u32>()
            .prop_filter("an unknown bit", |m| m & !KIND_BITS != 0)
            .prop_map(Defect::EventMask),
        prop_oneof![
            Just(Vec::new()),
            prop::collection::vec(b'a'..=b'z', 16..300),
            c_bytes(15).prop_filter("not UTF-8", |b| std::str::from_utf8(b).is_err()),
        ]
        .prop_map(Defect::Comm),
        prop_oneof![
            c_bytes(64),
            "[0-9./:a-f]{0,50}".prop_map(String::into_bytes),
            prop::collection::vec(b'1'..=b'9', 4000..5000),
        ]
        .prop_filter("not an address", |b| !is_valid_addr(b))
        .prop_map(Defect::Addr),
        c_bytes(40)
            .prop_filter("not a backend", |b| {
                !matches!(&b[..], b"auto" | b"fentry" | b"kprobe" | b"tracepoint")
            })
            .prop_map(Defect::Backend),
    ]
}

/// A config every field of which is valid; a NULL string is valid.
fn valid_config() -> impl Strategy<Value = Config> {
    let addrs = prop::sample::select(vec!["127.0.0.1", "10.0.0.0/8", "::1", "fe80::/10"]);
    (
        any::<u32>(),
        any::<u16>(),
        prop::sample::select(vec![0u8, 4, 6]),
        (0..16u32).prop_map(|bits| (bits << 1) & KIND_BITS),
        prop::option::of("[a-z0-9_-]{1,15}".prop_map(String::into_bytes)),
        prop::option::of(addrs.prop_map(|a| a.as_bytes().to_vec())),
        prop::option::of(Just(b"auto".to_vec())),
    )
        .prop_map(
            |(pid, port, family, event_mask, comm, addr, backend)| Config {
                pid,
                port,
                family,
                event_mask,
                comm,
                addr,
                backend,
            },
        )
}

fn with_defect(mut cfg: Config, defect: Defect) -> Config {
    match defect {
        Defect::Family(f) => cfg.family = f,
        Defect::EventMask(m) => cfg.event_mask = m,
        Defect::Comm(c) => cfg.comm = Some(c),
        Defect::Addr(a) => cfg.addr = Some(a),
        Defect::Backend(b) => cfg.backend = Some(b),
    }
    cfg
}

proptest! {
    // No tracer starts: every config is refused before loading anything.
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn an_invalid_config_is_refused_with_a_reason(
        cfg in (valid_config(), defect()).prop_map(|(c, d)| with_defect(c, d))
    ) {
        match open(&cfg) {
            Ok(h) => {
                // SAFETY: h came from udptrace_open.
                unsafe { udptrace_close(h) };
                prop_assert!(false, "accepted {:?}", cfg);
            }
            Err(reason) => {
                prop_assert!(!reason.is_empty() && !reason.contains('\n'), "reason {:?}", reason);
            }
        }
    }
}

proptest! {
    // Each case starts a real tracer: a few.
    #![proptest_config(ProptestConfig { cases: 4, ..ProptestConfig::default() })]

    #[test]
    fn a_valid_config_opens(cfg in valid_config()) {
        let h = open(&cfg);
        prop_assert!(h.is_ok(), "{:?} refused: {:?}", cfg, h);
        let h = h.unwrap();
        // SAFETY: h is open; ev and st are writable.
        unsafe {
            let mut ev = std::mem::zeroed();
            let rc = udptrace_next(h, &mut ev, 0);
            prop_assert!(rc == UDPTRACE_EVENT || rc == UDPTRACE_TIMEOUT, "next: {}", rc);
            let mut st = std::mem::zeroed();
            prop_assert_eq!(udptrace_get_stats(h, &mut st), 0);
            udptrace_close(h);
        }
    }
}

#[test]
fn null_arguments_are_einval_not_crashes() {
    // SAFETY: every pointer is NULL or valid, as the API allows.
    unsafe {
        let mut ev = std::mem::zeroed();
        let mut st = std::mem::zeroed();
        assert_eq!(udptrace_next(ptr::null_mut(), &mut ev, 0), UDPTRACE_EINVAL);
        assert_eq!(
            udptrace_get_stats(ptr::null_mut(), &mut st),
            UDPTRACE_EINVAL
        );
        assert!(!CStr::from_ptr(udptrace_last_error()).is_empty());
        assert!(udptrace_backend(ptr::null()).is_null());
        assert!(udptrace_probe(ptr::null(), usize::MAX).is_null());
        udptrace_stop(ptr::null_mut());
        udptrace_close(ptr::null_mut());
        let none: *const c_char = udptrace_probe(ptr::null(), 0);
        assert!(none.is_null());
    }
}

/// A connect() that fails, on a socket then used: no event, but the kernel
/// counts it, and `udptrace_get_shortfalls` tells, for the filters' selection.
#[test]
fn shortfalls_count_a_failed_connect() {
    let name = CString::new("ut-v2-shortfall").unwrap();
    // SAFETY: names this test's thread; the name is NUL-terminated.
    unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) };
    let h = open(&Config {
        pid: 0,
        port: 0,
        family: 0,
        event_mask: 0,
        comm: Some(b"ut-v2-shortfall".to_vec()),
        addr: None,
        backend: None,
    })
    .expect("the tracer starts (the tests need root)");
    // SAFETY: plain socket calls on a fresh fd; the addresses live across them.
    unsafe {
        let fd = libc::socket(libc::AF_INET6, libc::SOCK_DGRAM, 0);
        let on: libc::c_int = 1;
        let opt = libc::IPPROTO_IPV6;
        libc::setsockopt(fd, opt, libc::IPV6_V6ONLY, (&on as *const i32).cast(), 4);
        // An IPv6-only socket cannot reach an IPv4-mapped peer.
        let mut to: libc::sockaddr_in6 = std::mem::zeroed();
        to.sin6_family = libc::AF_INET6 as u16;
        to.sin6_port = 9u16.to_be();
        to.sin6_addr.s6_addr = std::net::Ipv4Addr::LOCALHOST.to_ipv6_mapped().octets();
        let size = std::mem::size_of_val(&to) as u32;
        assert_eq!(
            libc::connect(fd, (&to as *const libc::sockaddr_in6).cast(), size),
            -1
        );
        to.sin6_addr.s6_addr = std::net::Ipv6Addr::LOCALHOST.octets();
        let sent = libc::sendto(
            fd,
            b"x".as_ptr().cast(),
            1,
            0,
            (&to as *const libc::sockaddr_in6).cast(),
            size,
        );
        assert_eq!(sent, 1);
        libc::close(fd);
    }
    let mut out = udptrace_shortfalls {
        connect_failed: u64::MAX,
        connect_full: u64::MAX,
        counters_full: u64::MAX,
    };
    // SAFETY: an open handle and a writable struct.
    assert_eq!(unsafe { udptrace_get_shortfalls(h, &mut out) }, 0);
    assert_eq!(
        (out.connect_failed, out.connect_full, out.counters_full),
        (1, 0, 0)
    );
    // SAFETY: NULLs are refused, not dereferenced.
    let refused = unsafe { udptrace_get_shortfalls(h, ptr::null_mut()) };
    assert_eq!(refused, UDPTRACE_EINVAL);
    // SAFETY: closed once.
    unsafe { udptrace_close(h) };
}
