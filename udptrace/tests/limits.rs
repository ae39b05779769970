//! What the tracer promises at its edges: every event from the moment
//! `start()` returns is delivered or counted as lost, even under load; the
//! counts of what it does not emit follow the filters; a kernel table that
//! fills is reported, and other processes cannot fill it for a filtered
//! tracer. Needs root.

mod common;

use std::mem;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::*;
use udptrace::{CountField, Event, EventKind, Filter, Stats};

fn comm_filter(comm: &str) -> Filter {
    Filter {
        comm: Some(comm.into()),
        ..Default::default()
    }
}

fn stop_and_collect(mut tracer: udptrace::Tracer) -> (Vec<Event>, Stats) {
    tracer.stop();
    let events: Vec<Event> = tracer.by_ref().collect();
    (events, tracer.stats())
}

/// Three EAGAIN receives, one MSG_PEEK receive, and a connect() that fails
/// on a socket that is then used: none of them an event, each counted.
fn uncounted_workload() {
    let rx = bind_v4();
    let tx = bind_v4();
    rx.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 8];
    for _ in 0..3 {
        assert!(rx.recv(&mut buf).is_err());
    }
    // Blocking again: the datagram may reach rx after send_to returns.
    rx.set_nonblocking(false).unwrap();
    tx.send_to(b"peek", rx.local_addr().unwrap()).unwrap();
    assert_eq!(rx.peek(&mut buf).unwrap(), 4);
    assert_eq!(rx.recv(&mut buf).unwrap(), 4);
    failed_connect_then_send();
}

/// An IPv6-only socket cannot connect to an IPv4-mapped peer; it sends anyway.
fn failed_connect_then_send() {
    // SAFETY: plain socket syscalls on a fresh fd.
    unsafe {
        let fd = libc::socket(libc::AF_INET6, libc::SOCK_DGRAM, 0);
        assert!(fd >= 0);
        let on: libc::c_int = 1;
        let v6only = libc::setsockopt(
            fd,
            libc::IPPROTO_IPV6,
            libc::IPV6_V6ONLY,
            &on as *const _ as *const _,
            4,
        );
        assert_eq!(v6only, 0);
        let mapped = sockaddr_in6(SocketAddrV6::new(
            Ipv4Addr::LOCALHOST.to_ipv6_mapped(),
            9,
            0,
            0,
        ));
        let size = mem::size_of_val(&mapped) as u32;
        assert_eq!(libc::connect(fd, &mapped as *const _ as *const _, size), -1);
        let to = sockaddr_in6(SocketAddrV6::new(std::net::Ipv6Addr::LOCALHOST, 9, 0, 0));
        let n = libc::sendto(
            fd,
            b"x".as_ptr().cast(),
            1,
            0,
            &to as *const _ as *const _,
            size,
        );
        assert_eq!(n, 1);
        libc::close(fd);
    }
}

fn uncounted(stats: &Stats) -> (u64, u64, u64) {
    (stats.recv_eagain, stats.recv_peek, stats.connect_failed)
}

#[test]
fn counts_of_what_is_not_emitted_follow_the_filters() {
    set_comm("ut-lim-counts");
    let mine = builder()
        .filter(comm_filter("ut-lim-counts"))
        .start()
        .unwrap();
    let nobody = builder()
        .filter(comm_filter("ut-lim-nobody"))
        .start()
        .unwrap();
    uncounted_workload();
    let (_, mine) = stop_and_collect(mine);
    let (events, nobody) = stop_and_collect(nobody);
    // The thread's name is its own: exactly its receives and connect.
    assert_eq!(uncounted(&mine), (3, 1, 1), "{mine:?}");
    assert!(events.is_empty(), "{events:?}");
    assert_eq!(uncounted(&nobody), (0, 0, 0), "{nobody:?}");
}

/// Forks a child named `comm` that connects `sockets` UDP sockets and
/// keeps them open, idle, until its pipe closes. Returns its pid and pipe.
fn spawn_connected_idler(comm: &str, sockets: usize) -> (libc::pid_t, UdpSocket, i32) {
    let name = std::ffi::CString::new(comm).unwrap();
    let peer = bind_v4();
    let sa = sockaddr_in(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port(&peer)));
    let mut fds = [0i32; 2];
    // SAFETY: pipe() fills two fds.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: the child only makes async-signal-safe syscalls, then _exit()s.
    unsafe {
        let pid = libc::fork();
        if pid == 0 {
            libc::prctl(libc::PR_SET_NAME, name.as_ptr());
            // Gone with the test, whatever happens to it.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            libc::close(fds[0]);
            raise_fd_limit(sockets as u64 + 4096);
            let mut ok = true;
            for _ in 0..sockets {
                let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
                let size = mem::size_of_val(&sa) as u32;
                ok &= fd >= 0 && libc::connect(fd, &sa as *const _ as *const _, size) == 0;
            }
            // Ready (or failed): one byte, then wait for the parent to end it.
            let status = [ok as u8];
            libc::write(fds[1], status.as_ptr().cast(), 1);
            libc::pause();
            libc::_exit(0);
        }
        assert!(pid > 0, "fork failed");
        libc::close(fds[1]);
        let mut status = [0u8];
        assert_eq!(libc::read(fds[0], status.as_mut_ptr().cast(), 1), 1);
        assert_eq!(status[0], 1, "the child could not connect its sockets");
        (pid, peer, fds[0])
    }
}

fn end_idler(pid: libc::pid_t, pipe: i32) {
    // SAFETY: our own child and fd.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
        libc::close(pipe);
    }
}

/// Connects `n` sockets to `dst` and sends one datagram on each: `n` connect events.
fn connect_and_send(n: usize, dst: SocketAddr) -> Vec<u16> {
    (0..n)
        .map(|_| {
            let s = bind_v4();
            s.connect(dst).unwrap();
            s.send(b"c").unwrap();
            port(&s)
        })
        .collect()
}

fn connects_of(events: &[Event], ports: &[u16]) -> usize {
    events
        .iter()
        .filter(|e| e.kind == EventKind::Connect && ports.contains(&e.local.port()))
        .count()
}

/// More idle connected sockets than the kernel's table of pending connects holds.
const IDLE_CONNECTED: usize = 16384 + 100;

#[test]
fn a_full_connect_table_is_reported_and_other_processes_cannot_fill_it() {
    set_comm("ut-lim-victim");
    let dst = bind_v4().local_addr().unwrap();

    // Filtered on the victim: the idler's connects are not even stored.
    let tracer = builder()
        .filter(comm_filter("ut-lim-victim"))
        .start()
        .unwrap();
    let (pid, _peer, pipe) = spawn_connected_idler("ut-lim-idler", IDLE_CONNECTED);
    let ports = connect_and_send(3, dst);
    let (events, stats) = stop_and_collect(tracer);
    end_idler(pid, pipe);
    assert_eq!(connects_of(&events, &ports), 3, "{stats:?}");
    assert_eq!(stats.connect_full, 0, "{stats:?}");

    // Unfiltered, the table fills: what does not fit is counted, never silent.
    let tracer = builder().start().unwrap();
    let (pid, _peer, pipe) = spawn_connected_idler("ut-lim-idler", IDLE_CONNECTED);
    let ports = connect_and_send(3, dst);
    let (events, stats) = stop_and_collect(tracer);
    end_idler(pid, pipe);
    let reported = connects_of(&events, &ports);
    assert!(
        stats.connect_full >= (IDLE_CONNECTED - 16384 + 3 - reported) as u64,
        "{reported} of 3 connects reported: {stats:?}"
    );
}

/// 8 MiB, so that no datagram of the load is dropped while a receiver catches up.
fn large_receive_buffer(s: &UdpSocket) {
    use std::os::fd::AsRawFd;
    let size: libc::c_int = 8 << 20;
    // SAFETY: SO_RCVBUFFORCE takes an int.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            &size as *const _ as *const _,
            4,
        )
    };
    assert_eq!(rc, 0);
}

/// Echoes every datagram on `sock` back to its sender, asking for the address
/// (recvfrom + sendto, as a DNS server does), until `stop`; counts the echoes.
fn echo(sock: &UdpSocket, stop: &AtomicBool, echoed: &AtomicU64) {
    large_receive_buffer(sock);
    sock.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let mut buf = [0u8; 64];
    while !stop.load(Ordering::Relaxed) {
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            sock.send_to(&buf[..n], from).unwrap();
            echoed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The DNS load generator's pattern: one thread sends with sendto() on an
/// unconnected socket, another receives without asking for the address,
/// against a server that receives and answers with addresses. The load runs
/// on one client socket while the tracer starts; from the moment `start()`
/// returns, a new client socket sends to a second server port, exactly
/// `AFTER` times. A tracer of that port must see each datagram four times
/// (client send, server receive, server send, client receive, whose sender
/// the client did not ask for), or count what it could not deliver as lost.
#[test]
fn every_event_from_start_on_is_delivered_under_load() {
    const AFTER: u64 = 20_000;
    let (before_srv, after_srv) = (bind_v4(), bind_v4());
    let before_client = bind_v4();
    let after_client = std::sync::OnceLock::<UdpSocket>::new();
    let after_port = port(&after_srv);
    // Before any query: its server starts receiving only once tracing runs.
    large_receive_buffer(&after_srv);
    let stop = AtomicBool::new(false);
    let (echoed_before, echoed) = (AtomicU64::new(0), AtomicU64::new(0));
    let (answered_before, answered) = (AtomicU64::new(0), AtomicU64::new(0));
    let receive = |client: &UdpSocket, answered: &AtomicU64| {
        large_receive_buffer(client);
        client
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let mut buf = [0u8; 64];
        while !stop.load(Ordering::Relaxed) {
            if client.recv(&mut buf).is_ok() {
                answered.fetch_add(1, Ordering::Relaxed);
            }
        }
    };
    let (events, stats) = std::thread::scope(|s| {
        s.spawn(|| echo(&before_srv, &stop, &echoed_before));
        s.spawn(|| receive(&before_client, &answered_before));
        let sender = s.spawn(|| {
            let mut after = 0;
            while after < AFTER {
                match after_client.get() {
                    Some(client) => {
                        client
                            .send_to(b"query", after_srv.local_addr().unwrap())
                            .unwrap();
                        after += 1;
                    }
                    None => {
                        before_client
                            .send_to(b"query", before_srv.local_addr().unwrap())
                            .unwrap();
                    }
                }
                // Paced, so that the echo keeps up and nothing is dropped.
                if after % 4 == 0 {
                    std::thread::sleep(Duration::from_micros(100));
                }
            }
        });
        std::thread::sleep(Duration::from_millis(300)); // the load is running
        let tracer = builder()
            .filter(Filter {
                port: Some(after_port),
                ..Default::default()
            })
            .start()
            .unwrap();
        // The second server receives from now on: fexit and kretprobe miss
        // a call already in progress when they attach.
        s.spawn(|| echo(&after_srv, &stop, &echoed));
        let client = after_client.get_or_init(bind_v4);
        large_receive_buffer(client);
        s.spawn(|| receive(client, &answered));
        sender.join().unwrap();
        // The server answers every query and the client reads every answer
        // (their buffers drop none), however slowly.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while answered.load(Ordering::Relaxed) < AFTER && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        stop.store(true, Ordering::Relaxed);
        stop_and_collect(tracer)
    });
    let cport = port(after_client.get().unwrap());
    let count = |kind: EventKind, local: u16| {
        events
            .iter()
            .filter(|e| e.kind == kind && e.local.port() == local)
            .count() as u64
    };
    let seen = [
        count(EventKind::Send, cport),
        count(EventKind::Recv, after_port),
        count(EventKind::Send, after_port),
        count(EventKind::Recv, cport),
    ];
    assert_eq!(
        (
            echoed.load(Ordering::Relaxed),
            answered.load(Ordering::Relaxed)
        ),
        (AFTER, AFTER),
        "the server answered every query, the client read every answer"
    );
    assert_eq!(stats.undecodable, 0);
    // Exact, but for the hook runs the kernel skipped (a task preempted in
    // a hook; a kprobe call whose return probe never ran), each of which may
    // have been one of these events.
    let traced = seen.iter().sum::<u64>() + stats.lost;
    assert!(
        traced <= 4 * AFTER && 4 * AFTER <= traced + stats.skipped,
        "client sends, server receives, server sends, client receives: {seen:?}, {stats:?}"
    );
}

/// A socket table too small for the sockets in use: the events of sockets
/// without room are delivered, without counters, and counted as such.
#[test]
fn a_full_socket_table_is_reported() {
    set_comm("ut-lim-socks");
    const SOCKETS: usize = 1100;
    let dst = bind_v4();
    let tracer = builder()
        .filter(Filter {
            port: Some(port(&dst)),
            kinds: vec![EventKind::Send],
            ..Default::default()
        })
        .socket_table_size(1024)
        .start()
        .unwrap();
    raise_fd_limit(SOCKETS as u64 + 4096);
    let sockets: Vec<UdpSocket> = (0..SOCKETS).map(|_| bind_v4()).collect();
    for s in &sockets {
        s.send_to(b"s", dst.local_addr().unwrap()).unwrap();
    }
    let (events, stats) = stop_and_collect(tracer);
    assert_eq!(events.len(), SOCKETS, "every send is an event: {stats:?}");
    let without = events.iter().filter(|e| e.counters.tx_packets == 0).count() as u64;
    assert!(
        without >= (SOCKETS - 1024) as u64,
        "{without} without counters"
    );
    assert_eq!(stats.counters_full, without, "{stats:?}");
}

/// Counts by `keys`, in a count table of `table` keys, two sends from each
/// of `senders` new sockets: the rows, the stats, and the events in the rows.
fn count_sends_of_new_sockets(
    senders: u64,
    keys: Vec<CountField>,
    table: u32,
) -> (Vec<udptrace::CountRow>, Stats, u64) {
    let dst = bind_v4();
    let tracer = builder()
        .filter(Filter {
            port: Some(port(&dst)),
            kinds: vec![EventKind::Send],
            ..Default::default()
        })
        .count_by(keys)
        .count_table_size(table)
        .start()
        .unwrap();
    for _ in 0..senders {
        let s = bind_v4();
        s.send_to(b"c", dst.local_addr().unwrap()).unwrap();
        s.send_to(b"c", dst.local_addr().unwrap()).unwrap();
    }
    let rows = tracer.take_counts().unwrap();
    let counted = rows.iter().map(|r| r.events).sum();
    (rows, tracer.stats(), counted)
}

/// A count table too small for the keys: every event is counted or counted
/// as not counted. Keys with an address count only in the table.
#[test]
fn a_full_count_table_is_reported() {
    const SENDERS: u64 = 20;
    let keys = vec![CountField::Daddr, CountField::Sport];
    let (rows, stats, counted) = count_sends_of_new_sockets(SENDERS, keys, 16);
    assert_eq!(rows.len(), 16, "{rows:?}");
    assert_eq!(counted + stats.count_full, 2 * SENDERS, "{stats:?}");
}

/// Keys of ports count in a fixed number of slots per CPU first, then in the
/// table: with more keys than both hold, every event is still counted, in
/// one row per key, or counted as not counted. (A closed sender's port may
/// come back for a later one: keys, not senders, are distinct.)
#[test]
fn compact_keys_beyond_their_slots_and_the_table_are_reported() {
    const SENDERS: u64 = 3000;
    const TABLE: u64 = 16;
    let (rows, stats, counted) =
        count_sends_of_new_sockets(SENDERS, vec![CountField::Sport], TABLE as u32);
    let keys: std::collections::HashSet<_> = rows.iter().map(|r| r.key.clone()).collect();
    assert_eq!(keys.len(), rows.len(), "one row per key");
    assert_eq!(counted + stats.count_full, 2 * SENDERS, "{stats:?}");
    let slots = udptrace::COUNT_SLOTS_PER_CPU as u64 * online_cpus();
    if SENDERS > slots + TABLE {
        assert!(stats.count_full > 0, "{stats:?}");
    }
}

fn online_cpus() -> u64 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u64)
}
