//! Probe backends: which kernel hooks produce the events.

use std::fmt;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;
use std::sync::OnceLock;

use libbpf_rs::btf::types::FuncProto;
use libbpf_rs::btf::{BtfKind, BtfType};
use libbpf_rs::skel::Skel;
use libbpf_rs::Link;

use crate::bpf::types::{family_bit, fn_args};
use crate::bpf::UdptraceSkel;
use crate::Error;

/// A set of kernel hooks that produces udptrace's events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Backend {
    /// fexit on `udp_sendmsg`, `udpv6_sendmsg`, `udp_recvmsg` and
    /// `udpv6_recvmsg` (kernels with BPF trampolines), plus the cgroup hooks.
    Fentry,
    /// kprobe + kretprobe on the same functions (kernels with CONFIG_KPROBES),
    /// plus the cgroup hooks and `cgroup/sock_create` to give sockets cookies.
    Kprobe,
    /// `tp_btf/sock_send_length` and `sock_recv_length` (Linux 6.3+), the cgroup
    /// sock_addr hooks for peers and connects, and `cgroup/sock_release`.
    Tracepoint,
}

/// Functions the fentry and kprobe backends hook.
const FENTRY_FUNCTIONS: [&str; 4] = [
    "udp_sendmsg",
    "udpv6_sendmsg",
    "udp_recvmsg",
    "udpv6_recvmsg",
];

/// Functions the fentry and kprobe backends hook for packet events: where IP
/// transmits a UDP socket's datagram, and where UDP queues one to a socket
/// (after its header, length and checksum checks).
const PACKET_FUNCTIONS: [&str; 3] = ["ip_send_skb", "ip6_send_skb", "__udp_enqueue_schedule_skb"];

/// Where packet events come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PacketHooks {
    /// fentry or kprobes on [`PACKET_FUNCTIONS`].
    Functions,
    /// cgroup_skb egress and ingress on the root cgroup: the tracepoint
    /// backend's, and the others' when a packet function is missing.
    CgroupSkb,
}

/// Where the fentry and kprobe backends learn the reasons of UDP's own drops
/// where the kfree_skb tracepoint gives none (before Linux 5.17): the ICMP
/// port unreachable that answers a datagram without a socket, and the
/// checksum check a bad datagram fails (bpf/drop_cause.h); and the return
/// of UDP's enqueue (fexit, kretprobe), which says it refused one.
const DROP_CAUSE_FUNCTIONS: [&str; 3] = ["__icmp_send", "icmp6_send", "__skb_checksum_complete"];

/// Where the fentry and kprobe backends read the sender of every receive: the
/// function that hands a received datagram over, in the receiving thread.
const SENDER_FUNCTION: &str = "skb_consume_udp";

/// The length tracepoints, by their BTF typedefs.
const LENGTH_TRACEPOINTS: [&str; 2] = ["btf_trace_sock_send_length", "btf_trace_sock_recv_length"];

/// The programs one tracer loads.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub backend: Backend,
    /// fentry/kprobe: socket functions this kernel lacks, whose sockets the
    /// length tracepoints cover instead (one family and direction each).
    pub socket_fallback: Vec<&'static str>,
    /// Socket events (send, recv, connect, close) wanted.
    pub socket_events: bool,
    /// Whether sends and receives need the peer a sendto()/recvfrom() names
    /// (the sock_addr hooks): always, unless counting by fields and
    /// filtering on nothing that needs it.
    pub peers: Peers,
    /// Where receives learn their sender, when `peers.recv`.
    pub senders: Senders,
    /// Packet events wanted, and from which hooks.
    pub packets: Option<PacketHooks>,
    /// Drop events wanted.
    pub drops: bool,
    /// Each socket's drops and receive-queue peak kept in the socket table:
    /// the drop hook and the delivery hooks load for them, whatever events
    /// are wanted.
    pub sockets: bool,
    /// Where datagrams handed to a socket are noted, so that a drop by a full
    /// receive buffer is attributed to its socket: the receive side of the
    /// packet hooks, loaded for drops alone where the kfree_skb tracepoint
    /// does not name the socket (before Linux 6.11).
    pub deliveries: Option<PacketHooks>,
    /// Receives' times in the queue wanted (`udptrace latency`): stamped by
    /// UDP's enqueue and taken by the sender hook (bpf/wait_stamps.h), or
    /// kept per socket from ingress (bpf/wait_queue.h).
    pub waits: bool,
}

/// Where a receive's sender comes from (bpf/sender.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Senders {
    /// fentry or kprobe on [`SENDER_FUNCTION`]: from the datagram itself.
    Dequeue,
    /// The senders of the datagrams queued to the socket, noted as they
    /// arrive (cgroup_skb ingress), and the address a recvfrom() asks for
    /// (cgroup sock_addr hooks): the tracepoint backend's.
    Queue,
}

/// Of sends, of receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Peers {
    pub send: bool,
    pub recv: bool,
}

/// Bits of the tracepoint programs' family masks (`enum family_bit`).
pub(crate) const FAMILY_V4: u8 = family_bit::FAMILY_BIT_V4.0 as u8;
pub(crate) const FAMILY_V6: u8 = family_bit::FAMILY_BIT_V6.0 as u8;

impl Plan {
    /// `assume_missing`: functions to treat as absent (to test the fallback).
    pub fn new(
        backend: Backend,
        assume_missing: &[String],
        socket_events: bool,
        packets: bool,
        drops: bool,
        sockets: bool,
    ) -> Plan {
        let socket_fallback = match backend {
            Backend::Fentry | Backend::Kprobe => {
                let mut missing = missing_functions(&FENTRY_FUNCTIONS);
                missing.extend(
                    FENTRY_FUNCTIONS
                        .iter()
                        .filter(|f| assume_missing.iter().any(|m| m == *f)),
                );
                missing.sort_unstable();
                missing.dedup();
                missing
            }
            Backend::Tracepoint => Vec::new(),
        };
        let sender_function = missing_functions(&[SENDER_FUNCTION]).is_empty()
            && !assume_missing.iter().any(|m| m == SENDER_FUNCTION);
        let senders = match backend {
            Backend::Fentry | Backend::Kprobe if sender_function => Senders::Dequeue,
            _ => Senders::Queue,
        };
        let hooks = match backend {
            Backend::Fentry | Backend::Kprobe
                if missing_functions(&PACKET_FUNCTIONS).is_empty() =>
            {
                PacketHooks::Functions
            }
            _ => PacketHooks::CgroupSkb,
        };
        Plan {
            backend,
            socket_fallback,
            socket_events,
            peers: Peers {
                send: true,
                recv: true,
            },
            senders,
            packets: packets.then_some(hooks),
            drops,
            sockets,
            deliveries: (packets || sockets || (drops && !kfree_skb_has_rx_sk())).then_some(hooks),
            waits: false,
        }
    }

    /// Which socket families the send and receive tracepoints report.
    pub fn tracepoint_families(&self) -> (u8, u8) {
        if self.backend == Backend::Tracepoint {
            return (FAMILY_V4 | FAMILY_V6, FAMILY_V4 | FAMILY_V6);
        }
        let bit = |f: &str, family: u8| {
            if self.socket_fallback.contains(&f) {
                family
            } else {
                0
            }
        };
        (
            bit("udp_sendmsg", FAMILY_V4) | bit("udpv6_sendmsg", FAMILY_V6),
            bit("udp_recvmsg", FAMILY_V4) | bit("udpv6_recvmsg", FAMILY_V6),
        )
    }

    /// The name a probe is reported by: a stand-in says what it stands in for.
    pub fn probe_name(&self, section: &str) -> String {
        let stands_in_for: Vec<&str> = match section {
            "tp_btf/sock_send_length" | "tp_btf/sock_recv_length"
                if self.backend != Backend::Tracepoint =>
            {
                let dir = if section.ends_with("send_length") {
                    "sendmsg"
                } else {
                    "recvmsg"
                };
                self.socket_fallback
                    .iter()
                    .copied()
                    .filter(|f| f.ends_with(dir))
                    .collect()
            }
            _ => Vec::new(),
        };
        if stands_in_for.is_empty() {
            section.to_string()
        } else {
            format!("{section} (for {})", stands_in_for.join(", "))
        }
    }

    /// The backend whose hooks produce this plan's events: the one asked for,
    /// or the tracepoint backend when the plan loads none of its function
    /// hooks (drops alone come from the kfree_skb tracepoint on every backend).
    pub fn effective_backend(&self) -> Backend {
        let own_hooks = match self.backend {
            Backend::Fentry => ["fexit", "fentry"].as_slice(),
            Backend::Kprobe => ["kprobe", "kretprobe"].as_slice(),
            Backend::Tracepoint => return Backend::Tracepoint,
        };
        let sections = FENTRY_FUNCTIONS
            .iter()
            .chain(&PACKET_FUNCTIONS)
            .flat_map(|f| own_hooks.iter().map(move |kind| format!("{kind}/{f}")));
        if sections.into_iter().any(|s| self.wants_program(&s)) {
            self.backend
        } else {
            Backend::Tracepoint
        }
    }

    /// Whether the sockets that exist at the start are looked up once: for
    /// their owners, whom received packets and drops are reported as, and
    /// for kprobes, which cannot give a socket its cookie later (nor can
    /// fentry before Linux 5.12).
    pub fn seeds_sockets(&self) -> bool {
        self.packets.is_some()
            || self.drops
            || self.sockets
            || self.backend == Backend::Kprobe
            || (self.backend == Backend::Fentry && !kernel_hooks().tracing_socket_cookie)
    }

    /// Whether receives infer their senders from what is queued (the
    /// tracepoint backend's way).
    /// (Its programs read the socket through BTF: not on kprobes, where a
    /// receive whose caller names no address stays of unknown sender.)
    pub fn senders_from_queue(&self) -> bool {
        self.socket_events
            && self.peers.recv
            && self.senders == Senders::Queue
            && self.backend != Backend::Kprobe
    }

    /// Whether UDP's enqueue stamps datagrams for the sender hook to time
    /// (fentry, kprobe).
    pub fn stamps_waits(&self) -> bool {
        self.waits && self.senders == Senders::Dequeue
    }

    /// Whether each socket keeps a ring of arrival stamps (the tracepoint
    /// backend's way; like its senders, through BTF, so not on kprobes).
    pub fn queue_waits(&self) -> bool {
        self.waits && self.senders == Senders::Queue && self.backend != Backend::Kprobe
    }

    /// Whether the reasons of drops the kfree_skb tracepoint does not give
    /// (before Linux 5.17) are learnt from the hooks of bpf/drop_cause.h.
    pub fn drop_causes(&self) -> bool {
        (self.drops || self.sockets) && !kfree_skb_has_reason()
    }

    /// Whether the program in `section` (`fexit/udp_sendmsg`, `cgroup/connect4`) is loaded.
    pub fn wants_program(&self, section: &str) -> bool {
        let (kind, target) = section.split_once('/').unwrap_or((section, ""));
        let packet_fn = PACKET_FUNCTIONS.contains(&target);
        let via_functions = self.packets == Some(PacketHooks::Functions);
        // The receive side also notes deliveries for drops.
        // ... and stamps datagrams for their time in the queue.
        let delivery_fn = target == "__udp_enqueue_schedule_skb"
            && (self.deliveries == Some(PacketHooks::Functions) || self.stamps_waits());
        let present = !self.socket_fallback.contains(&target);
        let (tp_send, tp_recv) = self.tracepoint_families();
        let sender_hook = |backend: Backend| {
            self.backend == backend
                && self.socket_events
                && self.peers.recv
                && self.senders == Senders::Dequeue
        };
        let drop_causes = self.drop_causes();
        let refusals =
            target == "__udp_enqueue_schedule_skb" && matches!(kind, "fexit" | "kretprobe");
        if DROP_CAUSE_FUNCTIONS.contains(&target) || refusals {
            let backend = match kind {
                "fentry" | "fexit" => Backend::Fentry,
                _ => Backend::Kprobe,
            };
            return drop_causes && self.backend == backend && function_args(target).is_some();
        }
        match kind {
            "fentry" | "kprobe" if target == SENDER_FUNCTION => sender_hook(match kind {
                "fentry" => Backend::Fentry,
                _ => Backend::Kprobe,
            }),
            // Sends, receives, peers and connects are only for socket events;
            // creation and release keep the socket table (owners) in every mode.
            "cgroup" if target.starts_with("sendmsg") => self.socket_events && self.peers.send,
            "cgroup" if target.starts_with("recvmsg") => {
                self.socket_events && self.peers.recv && self.senders == Senders::Queue
            }
            "cgroup" if target.starts_with("connect") => self.socket_events,
            "cgroup" => true,
            "cgroup_skb" if target == "ingress" => {
                self.deliveries == Some(PacketHooks::CgroupSkb)
                    || self.senders_from_queue()
                    || self.queue_waits()
            }
            "cgroup_skb" => self.packets == Some(PacketHooks::CgroupSkb),
            "iter" => self.seeds_sockets(),
            "tp_btf" if target == "kfree_skb" => self.drops || self.sockets,
            "tp_btf" if target == "udp_fail_queue_rcv_skb" => {
                self.senders_from_queue() || self.queue_waits()
            }
            "tp_btf" if target == "sock_send_length" => self.socket_events && tp_send != 0,
            "tp_btf" if target == "sock_recv_length" => self.socket_events && tp_recv != 0,
            "fexit" => self.socket_events && self.backend == Backend::Fentry && present,
            "fentry" => {
                self.backend == Backend::Fentry && packet_fn && (via_functions || delivery_fn)
            }
            "kprobe" if packet_fn => {
                let refusals = drop_causes && target == "__udp_enqueue_schedule_skb";
                self.backend == Backend::Kprobe && (via_functions || delivery_fn || refusals)
            }
            "kprobe" | "kretprobe" => {
                self.socket_events && self.backend == Backend::Kprobe && present
            }
            _ => false,
        }
    }
}

/// What the running kernel's BTF says about the hooks, read once per
/// process: the BTF is megabytes to parse, and every backend tried asks.
pub(crate) struct KernelHooks {
    /// Of [`FENTRY_FUNCTIONS`], [`PACKET_FUNCTIONS`] and [`SENDER_FUNCTION`]:
    /// those the kernel lacks, or whose arguments it names otherwise.
    missing_functions: Vec<&'static str>,
    /// Where the arguments of the others are.
    args: Vec<(&'static str, fn_args)>,
    /// Of [`LENGTH_TRACEPOINTS`].
    missing_tracepoints: Vec<&'static str>,
    kfree_skb_reason: bool,
    kfree_skb_rx_sk: bool,
    /// Tracing programs may ask for a socket's cookie (Linux 5.12+): the
    /// kernel has the helper's function for them.
    pub tracing_socket_cookie: bool,
    /// Iterators may ask for a file's socket (Linux 5.11+).
    pub iter_sock_from_file: bool,
    /// Tracing programs may read a socket's local storage (Linux 5.11+).
    pub tracing_sk_storage: bool,
}

/// The arguments each hooked function's programs read, by the names the
/// kernel gives them.
fn needed_args(function: &str) -> &'static [&'static str] {
    match function {
        "udp_recvmsg" | "udpv6_recvmsg" => &["sk", "flags"],
        "skb_consume_udp" => &["sk", "skb", "len"],
        "ip_send_skb" | "ip6_send_skb" => &["skb"],
        "__udp_enqueue_schedule_skb" => &["sk", "skb"],
        "__icmp_send" => &["skb_in", "type", "code"],
        "icmp6_send" => &["skb", "type", "code"],
        "__skb_checksum_complete" => &["skb"],
        _ => &["sk"],
    }
}

/// Where `proto`'s arguments named in [`needed_args`] are, and its return
/// value after them; None if one is missing, or fexit could not reach it.
fn args_of(function: &str, proto: &FuncProto<'_>) -> Option<fn_args> {
    const NO_ARG: u8 = 0xff;
    // fentry/fexit contexts hold at most 6 arguments on older kernels, and bpf/args.h reads 8 slots.
    let count = u8::try_from(proto.len()).ok().filter(|&n| n <= 6)?;
    let position = |name: &str| {
        proto
            .iter()
            .position(|p| p.name.is_some_and(|n| n == name))
            .map(|i| i as u8)
    };
    let mut args = fn_args {
        sk: NO_ARG,
        skb: NO_ARG,
        len: NO_ARG,
        flags: NO_ARG,
        icmp_type: NO_ARG,
        icmp_code: NO_ARG,
        ret: count,
    };
    for &name in needed_args(function) {
        let at = position(name)?;
        match name {
            "sk" => args.sk = at,
            "skb" | "skb_in" => args.skb = at,
            "len" => args.len = at,
            "type" => args.icmp_type = at,
            "code" => args.icmp_code = at,
            _ => args.flags = at,
        }
    }
    Some(args)
}

/// Where the arguments of `function` are on this kernel (None if it cannot be hooked).
pub(crate) fn function_args(function: &str) -> Option<fn_args> {
    kernel_hooks()
        .args
        .iter()
        .find(|(f, _)| *f == function)
        .map(|(_, a)| *a)
}

pub(crate) fn kernel_hooks() -> &'static KernelHooks {
    static HOOKS: OnceLock<KernelHooks> = OnceLock::new();
    HOOKS.get_or_init(|| {
        let functions = FENTRY_FUNCTIONS
            .iter()
            .chain(&PACKET_FUNCTIONS)
            .chain(&[SENDER_FUNCTION])
            .chain(&DROP_CAUSE_FUNCTIONS)
            .copied();
        let Some(btf) = crate::sys::kernel_btf() else {
            return KernelHooks {
                missing_functions: functions.collect(),
                args: Vec::new(),
                missing_tracepoints: LENGTH_TRACEPOINTS.to_vec(),
                kfree_skb_reason: false,
                kfree_skb_rx_sk: false,
                tracing_socket_cookie: false,
                iter_sock_from_file: false,
                tracing_sk_storage: false,
            };
        };
        let has = |name: &str, kind: BtfKind| {
            btf.type_by_name::<BtfType<'_>>(name)
                .is_some_and(|t| t.kind() == kind)
        };
        // The tracepoint's prototype: its context, then skb, location, reason, rx_sk.
        let kfree_skb_args = btf
            .type_by_name::<BtfType<'_>>("btf_trace_kfree_skb")
            .and_then(|t| t.next_type()) // the typedef's pointer
            .and_then(|t| t.next_type()) // its function prototype
            .and_then(|t| FuncProto::try_from(t).ok())
            .map_or(0, |p| p.len());
        let args: Vec<(&'static str, fn_args)> = functions
            .clone()
            .filter_map(|f| {
                let proto = btf
                    .type_by_name::<BtfType<'_>>(f)
                    .filter(|t| t.kind() == BtfKind::Func)
                    .and_then(|t| t.next_type())
                    .and_then(|t| FuncProto::try_from(t).ok())?;
                Some((f, args_of(f, &proto)?))
            })
            .collect();
        KernelHooks {
            missing_functions: functions
                .filter(|f| !args.iter().any(|(g, _)| g == f))
                .collect(),
            args,
            kfree_skb_reason: kfree_skb_args >= 4,
            kfree_skb_rx_sk: kfree_skb_args >= 5,
            tracing_socket_cookie: has("bpf_get_socket_ptr_cookie", BtfKind::Func),
            iter_sock_from_file: has("bpf_sock_from_file", BtfKind::Func),
            tracing_sk_storage: has("bpf_sk_storage_get_tracing", BtfKind::Func),
            missing_tracepoints: LENGTH_TRACEPOINTS
                .iter()
                .copied()
                .filter(|t| !has(t, BtfKind::Typedef))
                .collect(),
        }
    })
}

/// Whether the kfree_skb tracepoint passes the socket a dropped datagram was
/// for (`rx_sk`, Linux 6.11+).
pub(crate) fn kfree_skb_has_rx_sk() -> bool {
    kernel_hooks().kfree_skb_rx_sk
}

/// Whether the kfree_skb tracepoint passes the reason of a drop (Linux 5.17+).
pub(crate) fn kfree_skb_has_reason() -> bool {
    kernel_hooks().kfree_skb_reason
}

/// Those of `names` the kernel cannot hook.
fn missing_functions(names: &[&'static str]) -> Vec<&'static str> {
    let missing = &kernel_hooks().missing_functions;
    names
        .iter()
        .copied()
        .filter(|n| missing.contains(n))
        .collect()
}

impl Backend {
    /// In order of preference: the cheapest hooks first.
    pub const ALL: [Backend; 3] = [Backend::Fentry, Backend::Kprobe, Backend::Tracepoint];

    pub fn name(self) -> &'static str {
        match self {
            Backend::Fentry => "fentry",
            Backend::Kprobe => "kprobe",
            Backend::Tracepoint => "tracepoint",
        }
    }

    /// Why the kernel's BTF says this backend cannot run, if it says so. A
    /// backend that passes can still be refused when loading (fentry needs
    /// BPF trampolines, which some kernels or lockdown settings deny).
    /// fentry and kprobe stand in the length tracepoints, where the kernel has
    /// them, for any of their functions it lacks.
    pub fn unavailable_reason(self) -> Option<String> {
        match self {
            // Saves loading every program only to fail at the first attach.
            Backend::Kprobe if !kprobes_available() => {
                Some("the kernel has no kprobes (CONFIG_KPROBES is off)".into())
            }
            Backend::Fentry | Backend::Kprobe => {
                let missing = *missing_functions(&FENTRY_FUNCTIONS).first()?;
                Backend::Tracepoint.unavailable_reason().map(|_| {
                    format!(
                        "the kernel has no traceable function '{missing}', nor the length \
                         tracepoints (Linux 6.3+) to stand in for it"
                    )
                })
            }
            Backend::Tracepoint => kernel_hooks().missing_tracepoints.first().map(|t| {
                let tp = t.trim_start_matches("btf_trace_");
                format!("the kernel has no '{tp}' tracepoint (added in Linux 6.3)")
            }),
        }
    }
}

/// libbpf attaches kprobes through the kprobe PMU, or on old kernels
/// through tracefs's kprobe_events; a kernel without kprobes has neither.
fn kprobes_available() -> bool {
    [
        "/sys/bus/event_source/devices/kprobe/type",
        "/sys/kernel/tracing/kprobe_events",
        "/sys/kernel/debug/tracing/kprobe_events",
    ]
    .iter()
    .any(|p| Path::new(p).exists())
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

impl std::str::FromStr for Backend {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fentry" => Ok(Backend::Fentry),
            "kprobe" => Ok(Backend::Kprobe),
            "tracepoint" => Ok(Backend::Tracepoint),
            // Echoed escaped: an error is one line, whatever was passed.
            _ => Err(format!(
                "unknown backend '{}' (expected fentry, kprobe or tracepoint)",
                s.escape_debug()
            )),
        }
    }
}

/// One attached probe: its name (`tp_btf/sock_send_length`, `cgroup/connect4`)
/// and the link that keeps it attached. Dropping the link detaches it.
pub(crate) struct Probe {
    pub name: String,
    pub _link: Link,
    /// The program, where it makes events and the kernel may skip a run of
    /// it ([`skipped_runs`](crate::stats)).
    pub skippable: Option<OwnedFd>,
}

/// What to say when a probe does not attach: kprobes fail this way when the
/// kernel has no CONFIG_KPROBES or the function cannot be probed.
fn attach_failure(section: &str) -> String {
    if section.starts_with("kprobe/") || section.starts_with("kretprobe/") {
        format!(
            "attaching {section} (kprobes disabled in this kernel, or the function not probeable)"
        )
    } else {
        format!("attaching {section}")
    }
}

/// Attaches every loaded program: tracing ones where their section says,
/// cgroup ones to the root of the cgroup v2 hierarchy so they see every socket.
pub(crate) fn attach(
    skel: &UdptraceSkel<'_>,
    plan: &Plan,
    cgroup_root: &Path,
) -> Result<Vec<Probe>, Error> {
    let cgroup = File::open(cgroup_root)
        .map_err(|e| Error::System(format!("cannot open cgroup {}: {e}", cgroup_root.display())))?;
    let mut probes = Vec::new();
    let mut progs: Vec<_> = skel.object().progs_mut().collect();
    // The hooks that note something for a later one first: the peer of a
    // sendto(), a receive's sender, a pending connect, a queued datagram's
    // sender (before sock_create vouches that a new socket's every datagram
    // is noted, bpf/sender.h). So no event at start-up misses its peer.
    progs.sort_by_key(|p| !notes_for_later(&p.section().to_string_lossy()));
    for prog in progs {
        if !prog.autoload() || prog.section().to_string_lossy().starts_with("iter/") {
            continue;
        }
        let section = prog.section().to_string_lossy().into_owned();
        let link = if section.starts_with("cgroup") {
            prog.attach_cgroup(cgroup.as_raw_fd())
        } else {
            prog.attach()
        }
        .map_err(Error::bpf(attach_failure(&section)))?;
        let skippable = makes_skippable_events(&section)
            .then(|| prog.as_fd().try_clone_to_owned())
            .transpose()
            .map_err(|e| Error::System(format!("keeping {section}: {e}")))?;
        probes.push(Probe {
            name: plan.probe_name(&section),
            _link: link,
            skippable,
        });
    }
    // Last, once sock_create sees every new socket: the ones that exist already.
    if plan.seeds_sockets() {
        crate::seed::seed_sockets(skel, kernel_hooks().tracing_socket_cookie)?;
    }
    Ok(probes)
}

/// Whether the program in `section` makes events (or a receive's sender) and the kernel may skip a
/// run of it: a tracing program (fentry, fexit, tp_btf) or kprobe whose
/// previous run on the same CPU has not ended, as when a task is preempted
/// in it on kernels that preempt there (Linux 7.x by default) and the next
/// task on that CPU passes the same hook. The kernel counts the runs it
/// skips; udptrace reports them (`Stats::skipped`). The hook that notes a
/// receive's sender counts too: a run of it skipped leaves a receive
/// without its sender. (cgroup hooks are never skipped.)
fn makes_skippable_events(section: &str) -> bool {
    let (kind, target) = section.split_once('/').unwrap_or((section, ""));
    let refusals = target == "__udp_enqueue_schedule_skb" && matches!(kind, "fexit" | "kretprobe");
    matches!(kind, "fentry" | "fexit" | "tp_btf" | "kprobe" | "kretprobe")
        && !DROP_CAUSE_FUNCTIONS.contains(&target)
        && !refusals
        && target != "udp_fail_queue_rcv_skb"
}

/// Whether the program in `section` leaves something for another hook.
fn notes_for_later(section: &str) -> bool {
    let (kind, target) = section.split_once('/').unwrap_or((section, ""));
    match kind {
        "cgroup" => ["sendmsg", "recvmsg", "connect"]
            .iter()
            .any(|t| target.starts_with(t)),
        "cgroup_skb" => target == "ingress",
        "fentry" | "kprobe" => target == SENDER_FUNCTION,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(backend: Backend, packets: Option<PacketHooks>, drops: bool) -> Plan {
        Plan {
            backend,
            socket_fallback: Vec::new(),
            socket_events: true,
            peers: Peers {
                send: true,
                recv: true,
            },
            senders: match backend {
                Backend::Tracepoint => Senders::Queue,
                _ => Senders::Dequeue,
            },
            packets,
            drops,
            sockets: false,
            deliveries: packets,
            waits: false,
        }
    }

    #[test]
    fn a_missing_function_is_covered_by_its_tracepoint_alone() {
        let mut p = plan(Backend::Fentry, None, false);
        p.socket_fallback = vec!["udpv6_recvmsg"];
        assert!(p.wants_program("fexit/udp_recvmsg"));
        assert!(!p.wants_program("fexit/udpv6_recvmsg"));
        assert!(p.wants_program("tp_btf/sock_recv_length"));
        assert!(!p.wants_program("tp_btf/sock_send_length"));
        assert_eq!(p.tracepoint_families(), (0, FAMILY_V6));
        assert_eq!(
            p.probe_name("tp_btf/sock_recv_length"),
            "tp_btf/sock_recv_length (for udpv6_recvmsg)"
        );
        assert_eq!(p.probe_name("fexit/udp_recvmsg"), "fexit/udp_recvmsg");
    }

    #[test]
    fn socket_events_alone_load_no_packet_or_drop_hooks() {
        let p = plan(Backend::Tracepoint, None, false);
        assert!(p.wants_program("tp_btf/sock_send_length"));
        assert!(p.wants_program("cgroup/connect4"));
        assert!(p.wants_program("cgroup/sock_create"));
        assert!(!p.wants_program("tp_btf/kfree_skb"));
        assert!(!p.wants_program("cgroup_skb/egress"));
        assert!(!p.wants_program("fexit/udp_sendmsg"));
        // Ingress only to note receives' senders.
        assert!(p.senders_from_queue());
        assert!(p.deliveries.is_none());
    }

    #[test]
    fn waits_load_the_enqueue_stamp_or_the_ingress_ring() {
        let mut p = plan(Backend::Fentry, None, false);
        assert!(!p.wants_program("fentry/__udp_enqueue_schedule_skb"));
        p.waits = true;
        assert!(p.stamps_waits() && !p.queue_waits());
        assert!(p.wants_program("fentry/__udp_enqueue_schedule_skb"));
        assert!(p.wants_program("fentry/skb_consume_udp"));
        assert!(!p.wants_program("cgroup_skb/ingress"));
        let mut p = plan(Backend::Kprobe, None, false);
        p.waits = true;
        assert!(p.wants_program("kprobe/__udp_enqueue_schedule_skb"));
        let mut p = plan(Backend::Tracepoint, None, false);
        p.waits = true;
        assert!(p.queue_waits() && !p.stamps_waits());
        assert!(p.wants_program("cgroup_skb/ingress"));
        assert!(p.wants_program("tp_btf/udp_fail_queue_rcv_skb"));
    }

    #[test]
    fn receives_learn_their_sender_where_each_backend_can() {
        let p = plan(Backend::Fentry, None, false);
        assert!(p.wants_program("fentry/skb_consume_udp"));
        assert!(!p.wants_program("kprobe/skb_consume_udp"));
        assert!(!p.wants_program("cgroup/recvmsg4"));
        assert!(!p.wants_program("cgroup_skb/ingress"));
        let p = plan(Backend::Kprobe, None, false);
        assert!(p.wants_program("kprobe/skb_consume_udp"));
        assert!(!p.wants_program("fentry/skb_consume_udp"));
        assert!(!p.wants_program("cgroup/recvmsg6"));
        let mut p = plan(Backend::Tracepoint, None, false);
        assert!(p.wants_program("cgroup_skb/ingress"));
        assert!(p.wants_program("cgroup/recvmsg4"));
        assert!(p.wants_program("cgroup/recvmsg6"));
        assert!(!p.wants_program("fentry/skb_consume_udp"));
        // Where the function is missing, fentry learns them as tracepoints do.
        let mut f = plan(Backend::Fentry, None, false);
        f.senders = Senders::Queue;
        assert!(!f.wants_program("fentry/skb_consume_udp"));
        assert!(f.wants_program("cgroup_skb/ingress"));
        // Not needed (a count keyed by neither), not loaded.
        p.peers.recv = false;
        assert!(!p.wants_program("cgroup_skb/ingress"));
        assert!(!p.senders_from_queue());
    }

    #[test]
    fn packet_hooks_follow_the_plan() {
        let p = plan(Backend::Kprobe, Some(PacketHooks::Functions), true);
        assert!(p.wants_program("kprobe/ip_send_skb"));
        assert!(p.wants_program("kprobe/udp_sendmsg"));
        assert!(p.wants_program("tp_btf/kfree_skb"));
        assert!(!p.wants_program("fentry/ip_send_skb"));
        assert!(!p.wants_program("cgroup_skb/egress"));
        let mut p = plan(Backend::Fentry, Some(PacketHooks::CgroupSkb), false);
        p.socket_events = false;
        assert!(!p.wants_program("cgroup/sendmsg4"));
        assert!(!p.wants_program("cgroup/connect6"));
        assert!(p.wants_program("cgroup/sock_release"));
        assert!(p.wants_program("cgroup_skb/egress"));
        assert!(!p.wants_program("fentry/ip_send_skb"));
        // Owners come from socket creation and the seeding iterator.
        assert!(!p.wants_program("fexit/udp_recvmsg"));
        assert!(!p.wants_program("tp_btf/sock_send_length"));
        assert!(p.wants_program("cgroup/sock_create"));
        assert!(p.wants_program("iter/task_file"));
    }

    #[test]
    fn peer_hooks_only_where_needed() {
        let mut p = plan(Backend::Tracepoint, None, false);
        p.peers.recv = false;
        assert!(p.wants_program("cgroup/sendmsg4"));
        assert!(p.wants_program("cgroup/sendmsg6"));
        assert!(!p.wants_program("cgroup/recvmsg4"));
        assert!(!p.wants_program("cgroup/recvmsg6"));
        assert!(p.wants_program("cgroup/connect4"));
    }

    #[test]
    fn drops_alone_note_deliveries_where_kfree_skb_names_no_socket() {
        let mut p = plan(Backend::Fentry, None, true);
        p.deliveries = Some(PacketHooks::Functions);
        assert!(p.wants_program("fentry/__udp_enqueue_schedule_skb"));
        assert!(!p.wants_program("fentry/ip_send_skb"));
        assert!(!p.wants_program("cgroup_skb/ingress"));
        assert_eq!(p.effective_backend(), Backend::Fentry);
        let mut p = plan(Backend::Tracepoint, None, true);
        p.deliveries = Some(PacketHooks::CgroupSkb);
        assert!(p.wants_program("cgroup_skb/ingress"));
        assert!(!p.wants_program("cgroup_skb/egress"));
    }

    #[test]
    fn drops_alone_run_on_the_tracepoint_backend_whatever_was_asked() {
        let mut p = plan(Backend::Fentry, None, true);
        p.socket_events = false;
        assert_eq!(p.effective_backend(), Backend::Tracepoint);
        p.backend = Backend::Kprobe;
        assert_eq!(p.effective_backend(), Backend::Tracepoint);
        p.packets = Some(PacketHooks::Functions);
        assert_eq!(p.effective_backend(), Backend::Kprobe);
        let p = plan(Backend::Fentry, None, false);
        assert_eq!(p.effective_backend(), Backend::Fentry);
    }

    #[test]
    fn existing_sockets_are_seeded_for_owners_and_kprobe_cookies() {
        assert!(!plan(Backend::Tracepoint, None, false).wants_program("iter/task_file"));
        assert!(plan(Backend::Tracepoint, None, true).wants_program("iter/task_file"));
        assert!(plan(Backend::Kprobe, None, false).wants_program("iter/task_file"));
        // Their cookies come from the socket iterator, run in each namespace.
        assert!(plan(Backend::Kprobe, None, false).wants_program("iter/udp"));
        assert!(!plan(Backend::Tracepoint, None, false).wants_program("iter/udp"));
    }
}
