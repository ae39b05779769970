//! Attribution: each event's cgroup path, container and pod, for cgroups laid
//! out as container runtimes lay them out, with a workload moved into each;
//! the cgroup and container filters; the resolver's bounded cache; and each
//! event's network namespace across a veth pair between two namespaces this
//! test makes, with the netns filter. Needs root.

mod common;

use std::collections::HashMap;
use std::ffi::CString;
use std::fs;
use std::mem;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use udptrace::{CgroupResolver, Error, Event, EventKind, Filter, Tracer, CGROUP_CACHE_SIZE};

const UID_1: &str = "1b2c3d4e-5f60-4718-8a9b-0c1d2e3f4a5b";
const UID_2: &str = "9e8d7c6b-5a49-4382-b716-a5b4c3d2e1f0";

/// A container id: 64 hex digits starting with `head`, then `seed` (one
/// per test: the tests run at once, and the container filter looks at
/// every cgroup).
fn container_id(head: &str, seed: char) -> String {
    format!("{head}{seed}{}", "0123456789abcdef".repeat(4))[..64].to_string()
}

/// The runtimes' layouts, below the test's own cgroup: each with the
/// container id and pod UID it shows.
fn layouts(seed: char) -> Vec<(String, String, Option<&'static str>)> {
    let id = |head| container_id(head, seed);
    let (a, b, c) = (id("a1"), id("b2"), id("c3"));
    let (d, e, f) = (id("d4"), id("e5e5"), id("e5e6"));
    let (g, podman_pod) = (id("f7"), id("f8"));
    let uid_1 = UID_1.replace('-', "_");
    vec![
        (format!("system.slice/docker-{a}.scope"), a, None),
        (format!("docker/{b}"), b, None),
        (
            format!(
                "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_1}.slice/\
                 cri-containerd-{c}.scope"
            ),
            c,
            Some(UID_1),
        ),
        (
            format!("kubepods/besteffort/pod{UID_2}/{d}"),
            d,
            Some(UID_2),
        ),
        (format!("machine.slice/crio-{e}.scope"), e, None),
        (format!("machine.slice/libpod-{f}.scope/container"), f, None),
        // Podman's cgroupfs driver, in a pod (whose own cgroup is a bare id).
        (format!("libpod_parent/{podman_pod}/libpod-{g}"), g, None),
    ]
}

/// Cgroups this test made under the cgroup v2 mount, removed when dropped.
struct TestCgroups {
    mount: PathBuf,
    /// Below the mount, without a leading slash.
    root: String,
}

impl TestCgroups {
    fn new(tag: &str) -> TestCgroups {
        let mount = udptrace::sys::cgroup2_mount().expect("a cgroup v2 mount");
        let root = format!("udptrace-test-{}-{tag}", std::process::id());
        fs::create_dir(mount.join(&root)).expect("making a cgroup (the tests need root)");
        TestCgroups { mount, root }
    }

    /// Makes `rel` (and its parents) below the test's cgroup; its directory.
    fn make(&self, rel: &str) -> PathBuf {
        let dir = self.dir(rel);
        fs::create_dir_all(&dir).expect("making a cgroup");
        dir
    }

    fn dir(&self, rel: &str) -> PathBuf {
        self.mount.join(&self.root).join(rel)
    }

    /// The path events report: below the mount, with a leading slash.
    fn path(&self, rel: &str) -> String {
        format!("/{}/{rel}", self.root)
    }
}

impl Drop for TestCgroups {
    fn drop(&mut self) {
        // Deepest first: a cgroup goes only once it has no children.
        let mut dirs = Vec::new();
        let mut stack = vec![self.mount.join(&self.root)];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).into_iter().flatten().flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                }
            }
            dirs.push(d);
        }
        for d in dirs.iter().rev() {
            let _ = fs::remove_dir(d);
        }
    }
}

/// A child that moves itself into the cgroup `dir`, then sends `count`
/// datagrams to `dst`. Its pid.
fn spawn_in_cgroup(dir: &Path, dst: SocketAddrV4, count: usize) -> libc::pid_t {
    let procs = CString::new(
        dir.join("cgroup.procs")
            .into_os_string()
            .into_encoded_bytes(),
    )
    .expect("a path without NUL");
    let sa = sockaddr_in(dst);
    // SAFETY: the child only makes async-signal-safe syscalls, then _exit()s.
    unsafe {
        let pid = libc::fork();
        if pid == 0 {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
            // "0" moves the writer itself.
            let moved = fd >= 0 && libc::write(fd, b"0".as_ptr().cast(), 1) == 1;
            let sock = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
            let mut ok = moved && sock >= 0;
            for _ in 0..count {
                let n = libc::sendto(
                    sock,
                    b"cgroup".as_ptr().cast(),
                    6,
                    0,
                    (&sa as *const libc::sockaddr_in).cast(),
                    mem::size_of_val(&sa) as u32,
                );
                ok &= n == 6;
            }
            libc::_exit(if ok { 0 } else { 1 });
        }
        assert!(pid > 0, "fork failed");
        pid
    }
}

fn this_netns() -> u32 {
    fs::metadata("/proc/thread-self/ns/net").unwrap().ino() as u32
}

/// Starts a tracer of sends to `port` with `f`'s cgroup filters.
fn sends_to(port: u16, f: Filter) -> Result<Tracer, Error> {
    builder()
        .filter(Filter {
            kinds: vec![EventKind::Send],
            port: Some(port),
            ..f
        })
        .start()
}

/// Runs one child per layout, each in its cgroup (made after the tracer
/// started: resolved on first sight); the sends by child pid, and the
/// pids by layout index.
fn run_layouts(
    cgroups: &TestCgroups,
    seed: char,
    receiver: &UdpSocket,
    mut tracer: Tracer,
) -> (HashMap<u32, Vec<Event>>, Vec<u32>) {
    let dst = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port(receiver));
    let pids: Vec<u32> = layouts(seed)
        .iter()
        .map(|(rel, _, _)| {
            let pid = spawn_in_cgroup(&cgroups.make(rel), dst, 2);
            wait_ok(pid);
            pid as u32
        })
        .collect();
    tracer.stop();
    let mut by_pid: HashMap<u32, Vec<Event>> = HashMap::new();
    for ev in tracer.by_ref() {
        by_pid.entry(ev.pid).or_default().push(ev);
    }
    assert_eq!(tracer.stats().lost, 0);
    (by_pid, pids)
}

#[test]
fn events_name_cgroup_container_and_pod() {
    let cgroups = TestCgroups::new("layouts");
    let receiver = bind_v4();
    let tracer = sends_to(port(&receiver), Filter::default()).unwrap();
    let (by_pid, pids) = run_layouts(&cgroups, '1', &receiver, tracer);
    assert_eq!(
        by_pid.len(),
        pids.len(),
        "only the children sent: {by_pid:?}"
    );
    for ((rel, id, pod), pid) in layouts('1').iter().zip(&pids) {
        let sends = &by_pid[pid];
        assert_eq!(sends.len(), 2, "{rel}");
        for ev in sends {
            let info = ev.cgroup_info.as_deref().expect("a resolved cgroup");
            assert_eq!(info.path, cgroups.path(rel));
            assert_eq!(info.container_id.as_deref(), Some(id.as_str()), "{rel}");
            assert_eq!(info.pod_uid.as_deref(), *pod, "{rel}");
            assert_eq!(ev.cgroup, fs::metadata(cgroups.dir(rel)).unwrap().ino());
            assert_eq!(ev.netns, this_netns());
            let json = serde_json::to_value(ev).unwrap();
            assert_eq!(json["cgroup_path"], cgroups.path(rel));
            assert_eq!(json["container_id"], id.as_str());
            assert_eq!(json["pod_uid"], serde_json::json!(pod));
            assert_eq!(json["netns"], this_netns());
        }
    }
}

#[test]
fn container_filter_takes_an_id_prefix() {
    let cgroups = TestCgroups::new("container");
    // Made before the tracer starts: the filter finds the container then.
    for (rel, _, _) in layouts('2') {
        cgroups.make(&rel);
    }
    let receiver = bind_v4();
    let (_, kube, _) = &layouts('2')[2];
    let f = Filter {
        container: Some(kube[..6].to_string()),
        ..Default::default()
    };
    let tracer = sends_to(port(&receiver), f).unwrap();
    let (by_pid, pids) = run_layouts(&cgroups, '2', &receiver, tracer);
    assert_eq!(by_pid.keys().collect::<Vec<_>>(), vec![&pids[2]]);
    assert_eq!(by_pid[&pids[2]].len(), 2);

    // Podman's container runs in a child of its scope: the scope is the container.
    let (_, podman, _) = &layouts('2')[5];
    let f = Filter {
        container: Some(podman[..3].to_uppercase()),
        ..Default::default()
    };
    let err = sends_to(port(&receiver), f)
        .err()
        .expect("e5e5 and e5e6 share e5e");
    let err = err.to_string();
    assert!(err.contains("is ambiguous"), "{err}");
    let f = Filter {
        container: Some(podman[..5].to_string()),
        ..Default::default()
    };
    let tracer = sends_to(port(&receiver), f).unwrap();
    let (by_pid, pids) = run_layouts(&cgroups, '2', &receiver, tracer);
    assert_eq!(by_pid.keys().collect::<Vec<_>>(), vec![&pids[5]]);

    // A Podman pod's cgroup is no container.
    let f = Filter {
        container: Some(container_id("f8", '2')[..8].to_string()),
        ..Default::default()
    };
    let err = sends_to(port(&receiver), f).err().expect("a pod");
    assert!(err.to_string().contains("no container's cgroup"), "{err}");
    let f = Filter {
        container: Some(container_id("f7", '2')[..8].to_string()),
        ..Default::default()
    };
    let tracer = sends_to(port(&receiver), f).unwrap();
    let (by_pid, pids) = run_layouts(&cgroups, '2', &receiver, tracer);
    assert_eq!(by_pid.keys().collect::<Vec<_>>(), vec![&pids[6]]);

    let f = Filter {
        container: Some("fedcba".into()),
        ..Default::default()
    };
    let err = sends_to(port(&receiver), f)
        .err()
        .expect("no such container");
    assert!(err.to_string().contains("no container's cgroup"), "{err}");
    let f = Filter {
        container: Some("xyz".into()),
        ..Default::default()
    };
    assert!(matches!(
        sends_to(port(&receiver), f),
        Err(Error::InvalidFilter(_))
    ));
}

#[test]
fn cgroup_filter_takes_the_subtree() {
    let cgroups = TestCgroups::new("subtree");
    for (rel, _, _) in layouts('3') {
        cgroups.make(&rel);
    }
    let receiver = bind_v4();
    // By path below the mount, and by absolute path.
    let cases = [
        (cgroups.path("machine.slice"), vec![4, 5]),
        (
            cgroups.dir("kubepods").to_string_lossy().into_owned(),
            vec![3],
        ),
        (cgroups.path(""), vec![0, 1, 2, 3, 4, 5, 6]),
    ];
    for (path, expected) in cases {
        let f = Filter {
            cgroup: Some(PathBuf::from(&path)),
            ..Default::default()
        };
        let tracer = sends_to(port(&receiver), f).unwrap();
        let (by_pid, pids) = run_layouts(&cgroups, '3', &receiver, tracer);
        let mut seen: Vec<usize> = by_pid
            .keys()
            .map(|pid| pids.iter().position(|p| p == pid).expect("a child"))
            .collect();
        seen.sort();
        assert_eq!(seen, expected, "{path}");
        assert!(by_pid.values().all(|evs| evs.len() == 2));
    }
    let f = Filter {
        cgroup: Some(cgroups.dir("no-such-cgroup")),
        ..Default::default()
    };
    let err = sends_to(port(&receiver), f).err().expect("no such cgroup");
    assert!(
        err.to_string().starts_with("invalid filter: no cgroup"),
        "{err}"
    );
}

#[test]
fn resolver_cache_stays_bounded_as_cgroups_come_and_go() {
    let cgroups = TestCgroups::new("churn");
    let mut resolver = CgroupResolver::new();
    let n = 10_000;
    for i in 0..n {
        let rel = format!("c{i}");
        let dir = cgroups.make(&rel);
        let id = fs::metadata(&dir).unwrap().ino();
        let info = resolver.resolve(id).expect("a live cgroup resolves");
        assert_eq!(info.path, cgroups.path(&rel));
        fs::remove_dir(&dir).unwrap();
        assert!(resolver.cached() <= CGROUP_CACHE_SIZE);
    }
    // A cgroup gone before it was seen resolves to nothing.
    let dir = cgroups.make("gone");
    let id = fs::metadata(&dir).unwrap().ino();
    fs::remove_dir(&dir).unwrap();
    assert_eq!(resolver.resolve(id), None);
    assert!(resolver.cached() <= CGROUP_CACHE_SIZE);
}

// A veth pair between two network namespaces, made with rtnetlink.

const VETH_A: &str = "utveth-a";
const VETH_B: &str = "utveth-b";
const ADDR_A: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 1);
const ADDR_B: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 2);

/// Appends an rtnetlink attribute, padded to 4 bytes; its offset.
fn attr(buf: &mut Vec<u8>, kind: u16, data: &[u8]) -> usize {
    let at = buf.len();
    buf.extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(data);
    buf.resize(buf.len().next_multiple_of(4), 0);
    at
}

/// Closes a nested attribute opened at `at`: its length covers what followed.
fn close_nest(buf: &mut [u8], at: usize) {
    let len = (buf.len() - at) as u16;
    buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
}

fn name(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

/// Creates the veth pair in this thread's namespace, its peer `VETH_B` in
/// the namespace of `peer_ns`.
fn create_veth(peer_ns: &fs::File) {
    const IFLA_IFNAME: u16 = 3;
    const IFLA_LINKINFO: u16 = 18;
    const IFLA_NET_NS_FD: u16 = 28;
    const IFLA_INFO_KIND: u16 = 1;
    const IFLA_INFO_DATA: u16 = 2;
    const VETH_INFO_PEER: u16 = 1;
    const NLA_F_NESTED: u16 = 1 << 15;
    let ifinfomsg = [0u8; 16];
    let mut msg = vec![0u8; 16]; // nlmsghdr, filled in last
    msg.extend_from_slice(&ifinfomsg);
    attr(&mut msg, IFLA_IFNAME, &name(VETH_A));
    let linkinfo = attr(&mut msg, IFLA_LINKINFO | NLA_F_NESTED, &[]);
    attr(&mut msg, IFLA_INFO_KIND, &name("veth"));
    let data = attr(&mut msg, IFLA_INFO_DATA | NLA_F_NESTED, &[]);
    let peer = attr(&mut msg, VETH_INFO_PEER | NLA_F_NESTED, &ifinfomsg);
    attr(&mut msg, IFLA_IFNAME, &name(VETH_B));
    attr(
        &mut msg,
        IFLA_NET_NS_FD,
        &(peer_ns.as_raw_fd() as u32).to_ne_bytes(),
    );
    close_nest(&mut msg, peer);
    close_nest(&mut msg, data);
    close_nest(&mut msg, linkinfo);
    let flags =
        (libc::NLM_F_REQUEST | libc::NLM_F_ACK | libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16;
    let len = msg.len() as u32;
    msg[0..4].copy_from_slice(&len.to_ne_bytes());
    msg[4..6].copy_from_slice(&libc::RTM_NEWLINK.to_ne_bytes());
    msg[6..8].copy_from_slice(&flags.to_ne_bytes());
    msg[8..12].copy_from_slice(&1u32.to_ne_bytes());
    // SAFETY: plain netlink socket calls on local buffers.
    unsafe {
        let fd = libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        );
        assert!(fd >= 0, "a netlink socket");
        let fd = OwnedFd::from_raw_fd(fd);
        let mut kernel: libc::sockaddr_nl = mem::zeroed();
        kernel.nl_family = libc::AF_NETLINK as u16;
        let sent = libc::sendto(
            fd.as_raw_fd(),
            msg.as_ptr().cast(),
            msg.len(),
            0,
            (&kernel as *const libc::sockaddr_nl).cast(),
            mem::size_of_val(&kernel) as u32,
        );
        assert_eq!(sent, msg.len() as isize);
        let mut reply = [0u8; 1024];
        let n = libc::recv(fd.as_raw_fd(), reply.as_mut_ptr().cast(), reply.len(), 0);
        assert!(n >= 20, "a netlink reply");
        // NLMSG_ERROR with error 0 is the ack.
        assert_eq!(
            u16::from_ne_bytes([reply[4], reply[5]]),
            libc::NLMSG_ERROR as u16
        );
        let err = i32::from_ne_bytes(reply[16..20].try_into().unwrap());
        assert_eq!(err, 0, "creating the veth pair: errno {}", -err);
    }
}

/// Gives this namespace's `ifname` the address `addr`/24 and brings it up.
fn configure(ifname: &str, addr: Ipv4Addr) {
    // SAFETY: plain socket and ioctl calls on zeroed ifreqs.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        assert!(fd >= 0);
        let fd = OwnedFd::from_raw_fd(fd);
        let ifreq = |sa: Option<libc::sockaddr_in>| {
            let mut ifr: libc::ifreq = mem::zeroed();
            for (dst, src) in ifr.ifr_name.iter_mut().zip(name(ifname)) {
                *dst = src as libc::c_char;
            }
            if let Some(sa) = sa {
                std::ptr::copy_nonoverlapping(
                    (&sa as *const libc::sockaddr_in).cast::<u8>(),
                    &mut ifr.ifr_ifru as *mut _ as *mut u8,
                    mem::size_of::<libc::sockaddr_in>(),
                );
            }
            ifr
        };
        let addr_ifr = ifreq(Some(sockaddr_in(SocketAddrV4::new(addr, 0))));
        assert_eq!(
            libc::ioctl(fd.as_raw_fd(), libc::SIOCSIFADDR, &addr_ifr),
            0,
            "address"
        );
        let mask = ifreq(Some(sockaddr_in(SocketAddrV4::new(
            Ipv4Addr::new(255, 255, 255, 0),
            0,
        ))));
        assert_eq!(
            libc::ioctl(fd.as_raw_fd(), libc::SIOCSIFNETMASK, &mask),
            0,
            "netmask"
        );
        let mut up = ifreq(None);
        assert_eq!(libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFFLAGS, &mut up), 0);
        up.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        assert_eq!(
            libc::ioctl(fd.as_raw_fd(), libc::SIOCSIFFLAGS, &up),
            0,
            "up"
        );
    }
}

/// The port `B` listens on, and one nothing listens on (a drop in `B`).
const PORT_B: u16 = 47_001;
const CLOSED_PORT_B: u16 = 47_002;

/// Namespace A sends to B over the veth pair, B answers, and A sends once
/// to a port B has no socket on; `start` starts the tracer once both
/// namespaces are up, with their inode numbers (A, B). The tracer, stopped
/// after the traffic, and the inode numbers.
fn veth_exchange(start: impl FnOnce(u32, u32) -> Tracer + Send) -> (Tracer, u32, u32) {
    let (b_ns_tx, b_ns_rx) = mpsc::channel::<(fs::File, u32)>();
    let (b_go_tx, b_go_rx) = mpsc::channel::<()>();
    let (b_ready_tx, b_ready_rx) = mpsc::channel::<()>();
    let (traced_tx, traced_rx) = mpsc::channel::<()>();
    std::thread::scope(|s| {
        let b = s.spawn(move || {
            // SAFETY: unshare affects only this thread.
            assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0, "unshare");
            lo_up();
            let ns = fs::File::open("/proc/thread-self/ns/net").unwrap();
            b_ns_tx.send((ns, this_netns())).unwrap();
            b_go_rx.recv().unwrap(); // the peer is here now
            configure(VETH_B, ADDR_B);
            let sock = UdpSocket::bind((ADDR_B, PORT_B)).unwrap();
            sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            b_ready_tx.send(()).unwrap();
            // Only now: a receive already under way as the hooks attach is
            // missed by the ones that see its return (fexit, kretprobes).
            traced_rx.recv().unwrap();
            let mut buf = [0u8; 64];
            let (n, from) = sock.recv_from(&mut buf).expect("A's datagram");
            assert_eq!(&buf[..n], b"over the pair");
            sock.send_to(b"answer", from).unwrap();
        });
        let a = s.spawn(move || {
            // SAFETY: unshare affects only this thread.
            assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0, "unshare");
            lo_up();
            let (b_ns, b_inode) = b_ns_rx.recv().unwrap();
            create_veth(&b_ns);
            b_go_tx.send(()).unwrap();
            configure(VETH_A, ADDR_A);
            b_ready_rx.recv().unwrap();
            let tracer = start(this_netns(), b_inode);
            traced_tx.send(()).unwrap();
            let sock = UdpSocket::bind((ADDR_A, 0)).unwrap();
            sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            sock.send_to(b"over the pair", (ADDR_B, PORT_B)).unwrap();
            let mut buf = [0u8; 64];
            let (n, from) = sock.recv_from(&mut buf).expect("B's answer");
            assert_eq!(
                (&buf[..n], from),
                (&b"answer"[..], SocketAddr::from((ADDR_B, PORT_B)))
            );
            sock.send_to(b"nobody", (ADDR_B, CLOSED_PORT_B)).unwrap();
            // The drop happens as B receives it: wait for B's ICMP error to come back.
            std::thread::sleep(Duration::from_millis(200));
            settle();
            tracer.stop();
            (tracer, this_netns(), b_inode)
        });
        b.join().expect("namespace B");
        a.join().expect("namespace A")
    })
}

fn on_the_pair(ev: &Event) -> bool {
    let addrs = [ev.local.ip(), ev.remote.ip()];
    addrs.contains(&ADDR_A.into()) || addrs.contains(&ADDR_B.into())
}

/// The events on the pair: kind, netns, local address and remote end
/// (A's ephemeral port as 0), sorted.
type PairEvent = (EventKind, u32, Ipv4Addr, SocketAddr);

fn on_pair(tracer: &mut Tracer, ns: [u32; 2]) -> (Vec<Event>, Vec<PairEvent>) {
    // The other test's pair has the same addresses, in namespaces of its own.
    let events: Vec<Event> = tracer
        .by_ref()
        .filter(|e| on_the_pair(e) && ns.contains(&e.netns))
        .collect();
    assert_eq!(tracer.stats().lost, 0);
    let fix = |s: SocketAddr| {
        if s.ip() == ADDR_A {
            SocketAddr::from((ADDR_A, 0))
        } else {
            s
        }
    };
    let mut seen: Vec<_> = events
        .iter()
        .map(|e| {
            let local = match e.local.ip() {
                std::net::IpAddr::V4(v4) => v4,
                other => panic!("IPv4 expected, got {other}"),
            };
            (e.kind, e.netns, local, fix(e.remote))
        })
        .collect();
    seen.sort_by_key(|e| format!("{e:?}"));
    (events, seen)
}

const KINDS: [EventKind; 5] = [
    EventKind::Send,
    EventKind::Recv,
    EventKind::PacketSend,
    EventKind::PacketRecv,
    EventKind::Drop,
];

fn pair_tracer(netns: Option<u32>) -> Tracer {
    builder()
        .filter(Filter {
            kinds: KINDS.to_vec(),
            netns,
            ..Default::default()
        })
        .start()
        .unwrap()
}

#[test]
fn events_carry_their_network_namespace() {
    let (mut tracer, ns_a, ns_b) = veth_exchange(|_, _| pair_tracer(None));
    let (events, seen) = on_pair(&mut tracer, [ns_a, ns_b]);
    assert_ne!(ns_a, ns_b);
    assert!(ns_a != this_netns() && ns_b != this_netns());
    let a = SocketAddr::from((ADDR_A, 0));
    let b = SocketAddr::from((ADDR_B, PORT_B));
    let closed = SocketAddr::from((ADDR_B, CLOSED_PORT_B));
    // (kind, netns, local address, remote end), each once.
    let mut expected = vec![
        (EventKind::Send, ns_a, ADDR_A, b),
        (EventKind::PacketSend, ns_a, ADDR_A, b),
        (EventKind::PacketRecv, ns_b, ADDR_B, a),
        (EventKind::Recv, ns_b, ADDR_B, a),
        (EventKind::Send, ns_b, ADDR_B, a),
        (EventKind::PacketSend, ns_b, ADDR_B, a),
        (EventKind::PacketRecv, ns_a, ADDR_A, b),
        (EventKind::Recv, ns_a, ADDR_A, b),
        (EventKind::Send, ns_a, ADDR_A, closed),
        (EventKind::PacketSend, ns_a, ADDR_A, closed),
        (EventKind::Drop, ns_b, ADDR_B, a),
    ];
    expected.sort_by_key(|e| format!("{e:?}"));
    assert_eq!(seen, expected, "{events:#?}");
    let drop = events.iter().find(|e| e.kind == EventKind::Drop).unwrap();
    assert_eq!(drop.drop_reason().as_deref(), Some("NO_SOCKET"));
    assert_eq!(drop.local.port(), CLOSED_PORT_B);
    let json = serde_json::to_value(drop).unwrap();
    assert_eq!(json["netns"], ns_b);
}

#[test]
fn netns_filter_keeps_one_namespace() {
    let (mut tracer, ns_a, ns_b) = veth_exchange(|_, ns_b| pair_tracer(Some(ns_b)));
    // The pair's events of both namespaces, had the filter let A's through: only B's.
    let (events, seen) = on_pair(&mut tracer, [ns_a, ns_b]);
    assert!(events.iter().all(|e| e.netns == ns_b), "{events:#?}");
    let a = SocketAddr::from((ADDR_A, 0));
    let mut expected = vec![
        (EventKind::PacketRecv, ns_b, ADDR_B, a),
        (EventKind::Recv, ns_b, ADDR_B, a),
        (EventKind::Send, ns_b, ADDR_B, a),
        (EventKind::PacketSend, ns_b, ADDR_B, a),
        (EventKind::Drop, ns_b, ADDR_B, a),
    ];
    expected.sort_by_key(|e| format!("{e:?}"));
    assert_eq!(seen, expected, "{events:#?}");
    assert_ne!(ns_a, ns_b);
}
