//! Loading the BPF object: which programs load, the filters and settings
//! written into its `.rodata`, and the per-CPU ring buffers it writes to.

use std::mem::{self, MaybeUninit};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::OnceLock;

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{MapCore, MapFlags, MapHandle, MapType, OpenObject, PrintLevel};

use crate::backend::{self, Backend, PacketHooks, Peers, Plan, Senders};
use crate::bpf::{UdptraceSkel, UdptraceSkelBuilder};
use crate::count::CountField;
use crate::drop_reason::drop_reason_code;
use crate::event::EventKind;
use crate::features;
use crate::filter::addr_and_mask;
use crate::hist::Histogram;
use crate::settings::Settings;
use crate::Error;

/// libbpf prints warnings and whole verifier logs to stderr; users get our
/// one-line errors instead, naming the program the kernel rejected, and
/// `UDPTRACE_DEBUG=1` brings libbpf's log back.
pub(crate) fn route_libbpf_log() {
    static DEBUG: OnceLock<bool> = OnceLock::new();
    fn note(_: PrintLevel, msg: String) {
        if let Some(name) = rejected_program(&msg) {
            REJECTED.with(|r| *r.borrow_mut() = Some(name.to_owned()));
        }
        if DEBUG.get() == Some(&true) {
            eprint!("libbpf: {msg}");
        }
    }
    DEBUG.get_or_init(|| {
        let debug = std::env::var_os("UDPTRACE_DEBUG").is_some_and(|v| !v.is_empty() && v != "0");
        // Warnings alone unless debugging: they include the failed loads.
        let level = if debug {
            PrintLevel::Debug
        } else {
            PrintLevel::Warn
        };
        libbpf_rs::set_print(Some((level, note as _)));
        debug
    });
}

thread_local! {
    /// The program whose load libbpf last reported failed on this thread.
    static REJECTED: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// The program named by libbpf's "prog 'NAME': BPF program load failed".
fn rejected_program(msg: &str) -> Option<&str> {
    let rest = msg.strip_prefix("libbpf: prog '")?;
    let (name, rest) = rest.split_once("': ")?;
    rest.starts_with("BPF program load failed").then_some(name)
}

/// What failed when loading the object did: the program the verifier
/// rejected, if libbpf named one.
fn load_failure() -> String {
    match REJECTED.with(|r| r.borrow_mut().take()) {
        Some(name) => format!(
            "loading the BPF programs (the kernel rejected {name}; UDPTRACE_DEBUG=1 prints why)"
        ),
        None => "loading the BPF programs".into(),
    }
}

/// The programs a tracer configured by `b` loads on `backend`.
pub(crate) fn plan(b: &Settings, backend: Backend) -> Plan {
    let f = &b.filter;
    // Close events come from the release hook every mode loads; their
    // counters need the send and receive hooks, unless only the receive
    // buffers are tracked.
    let socket_events = if b.track_receive_buffers && !b.track_sockets {
        f.wants_any(&[EventKind::Send, EventKind::Recv, EventKind::Connect])
    } else {
        f.wants_any(&EventKind::SOCKET)
    };
    let mut plan = Plan::new(
        backend,
        &b.assume_missing,
        socket_events,
        f.wants_any(&[EventKind::PacketSend, EventKind::PacketRecv]),
        f.wants_any(&[EventKind::Drop]),
        b.track_sockets || b.track_receive_buffers,
    );
    // A count needs a send's peer only to key by destination, a receive's
    // only to key by source; a port or address filter needs both.
    if let Some(fields) = &b.count_by {
        let keyed_by = |these: &[CountField]| fields.iter().any(|f| these.contains(f));
        let filtered = f.port.is_some() || f.addr.is_some();
        plan.peers = Peers {
            send: filtered || keyed_by(&[CountField::Daddr, CountField::Dport]),
            recv: filtered || keyed_by(&[CountField::Saddr, CountField::Sport]),
        };
    }
    if b.histogram == Some(Histogram::QueueWait) || (b.track_waits && b.track_sockets) {
        plan.waits = true;
        // The sender hook hands each receive its wait with its sender.
        if plan.senders == Senders::Dequeue {
            plan.peers.recv = true;
        }
    }
    plan
}

/// Opens the object, chooses the programs `plan` loads, writes the settings
/// of `b` into `.rodata`, loads it and installs a ring buffer per CPU. The
/// rings are returned with the skeleton: the reader drains them.
pub(crate) fn load<'obj>(
    b: &Settings,
    storage: &'obj mut MaybeUninit<OpenObject>,
    plan: &Plan,
) -> Result<(UdptraceSkel<'obj>, Vec<MapHandle>), Error> {
    let (rings, ring_bytes) = create_rings(b)?;
    let mut open = UdptraceSkelBuilder::default()
        .open(storage)
        .map_err(Error::bpf("opening the BPF object"))?;
    open.maps
        .events
        .set_inner_map_fd(rings[0].as_fd())
        .and_then(|()| open.maps.events.set_max_entries(rings.len() as u32))
        .map_err(Error::bpf("sizing the ring buffers"))?;
    // Per CPU, with a snap length: a scratch for payloads in page fragments,
    // and a record with a payload, built before it is copied at its length.
    if b.snaplen > 0 {
        open.maps
            .payload_scratch
            .set_max_entries(rings.len() as u32)
            .and_then(|()| {
                // bpf/packet.h's PAYLOAD_RECORDS_PER_CPU.
                open.maps
                    .payload_records
                    .set_max_entries(2 * rings.len() as u32)
            })
            .map_err(Error::bpf("sizing the payload scratch"))?;
    }
    if let Some(sockets) = b.socket_table_size {
        open.maps
            .sock_states
            .set_max_entries(sockets)
            .map_err(Error::bpf("sizing the socket table"))?;
    }
    if let Some(keys) = b.count_table_size {
        open.maps
            .counts
            .set_max_entries(keys)
            .map_err(Error::bpf("sizing the count table"))?;
    }
    // The histogram and wait tables take room only where they are used.
    let unused = |used: bool, size: u32| if used { size } else { 1 };
    open.maps
        .hists
        .set_max_entries(unused(
            b.histogram.is_some(),
            b.count_table_size.unwrap_or(65536),
        ))
        .and_then(|()| {
            open.maps
                .wait_stamps
                .set_max_entries(unused(plan.stamps_waits(), WAIT_STAMPS))
        })
        .map_err(Error::bpf("sizing the histogram tables"))?;
    let f = &b.filter;
    for mut prog in open.open_object_mut().progs_mut() {
        prog.set_autoload(plan.wants_program(&prog.section().to_string_lossy()));
    }
    let ro = open
        .maps
        .rodata_data
        .as_deref_mut()
        .expect("the object has .rodata");
    ro.filter_pid = f.pid.unwrap_or(0);
    if let Some(comm) = &f.comm {
        ro.filter_comm_on = true;
        for (dst, src) in ro.filter_comm.iter_mut().zip(comm.bytes()) {
            *dst = src as _;
        }
    }
    ro.filter_family = f.family.map_or(0, |fam| fam.af());
    ro.filter_port = f.port.unwrap_or(0);
    if let Some(net) = &f.addr {
        let (addr, mask) = addr_and_mask(net);
        ro.filter_addr_on = true;
        ro.filter_addr = addr;
        ro.filter_addr_mask = mask;
    }
    ro.filter_netns = f.netns.unwrap_or(0);
    if let Some(target) = b.cgroup_target {
        ro.filter_cgroup_id = target.id;
        ro.filter_cgroup_level = target.level;
    }
    ro.event_kinds = f.kind_mask();
    ro.payload_room = payload_room(b.snaplen);
    ro.payload_snaplen = b.snaplen;
    ro.emit_eagain = b.report_eagain;
    ro.wakeup_bytes = b
        .wakeup_bytes
        .unwrap_or_else(|| default_wakeup_bytes(b.snaplen, ring_bytes));
    if let Some(fields) = &b.count_by {
        ro.count_mode = true;
        ro.count_keys = fields.iter().fold(0, |m, f| m | f.bit());
    }
    ro.hist_kind = b.histogram.map_or(0, Histogram::wire);
    ro.hist_counts = b.histogram_beside_counts;
    ro.stamp_waits = plan.stamps_waits();
    ro.queue_waits = plan.queue_waits();
    ro.wait_slack = 2 * rings.len() as u32 + 2;
    ro.kfree_skb_has_rx_sk = (plan.drops || plan.sockets) && backend::kfree_skb_has_rx_sk();
    ro.track_sockets = plan.sockets;
    ro.note_deliveries = (plan.drops || plan.sockets) && !backend::kfree_skb_has_rx_sk();
    ro.cgroup_skb_task_btf = plan.packets.is_some() && features::cgroup_skb_task_btf();
    ro.kfree_skb_has_reason = backend::kfree_skb_has_reason();
    ro.note_refusals = plan.drop_causes() && plan.backend == Backend::Kprobe;
    ro.tracing_socket_cookie = features::tracing_socket_cookie();
    ro.tracing_task_btf = features::tracing_task_btf();
    ro.iter_sock_from_file = backend::kernel_hooks().iter_sock_from_file;
    ro.tracing_sk_storage = backend::kernel_hooks().tracing_sk_storage;
    set_function_args(ro);
    (ro.tp_send_families, ro.tp_recv_families) = plan.tracepoint_families();
    (ro.peers_of_sends, ro.peers_of_recvs) = (plan.peers.send, plan.peers.recv);
    ro.senders_from_queue = plan.senders_from_queue();
    ro.ingress_deliveries = plan.deliveries == Some(PacketHooks::CgroupSkb);
    if plan.drops || plan.sockets {
        let code = |name| drop_reason_code(name).unwrap_or(u32::MAX);
        ro.reason_rcvbuff = code("SOCKET_RCVBUFF");
        ro.reason_proto_mem = code("PROTO_MEM");
        ro.reason_not_specified = code("NOT_SPECIFIED");
        ro.reason_no_socket = code("NO_SOCKET");
        ro.reason_udp_csum = code("UDP_CSUM");
    }
    REJECTED.with(|r| r.borrow_mut().take());
    let skel = open.load().map_err(|e| Error::bpf(load_failure())(e))?;
    for (cpu, ring) in rings.iter().enumerate() {
        let fd = ring.as_fd().as_raw_fd() as u32;
        skel.maps
            .events
            .update(
                &(cpu as u32).to_ne_bytes(),
                &fd.to_ne_bytes(),
                MapFlags::ANY,
            )
            .map_err(Error::bpf("installing the ring buffers"))?;
    }
    Ok((skel, rings))
}

/// Datagrams queued at once, system-wide, whose enqueue stamps are kept
/// (bpf/wait_stamps.h): beyond, the oldest are forgotten, their waits unknown.
const WAIT_STAMPS: u32 = 65536;

/// Where the hooked functions' arguments are on this kernel; a function
/// whose arguments were not found is not loaded, and keeps its defaults.
fn set_function_args(ro: &mut crate::bpf::types::rodata) {
    let slots = [
        ("udp_sendmsg", &mut ro.udp_sendmsg_args),
        ("udpv6_sendmsg", &mut ro.udpv6_sendmsg_args),
        ("udp_recvmsg", &mut ro.udp_recvmsg_args),
        ("udpv6_recvmsg", &mut ro.udpv6_recvmsg_args),
        ("skb_consume_udp", &mut ro.skb_consume_udp_args),
        ("ip_send_skb", &mut ro.ip_send_skb_args),
        ("ip6_send_skb", &mut ro.ip6_send_skb_args),
        ("__udp_enqueue_schedule_skb", &mut ro.udp_enqueue_args),
        ("__icmp_send", &mut ro.icmp_send_args),
        ("icmp6_send", &mut ro.icmp6_send_args),
        ("__skb_checksum_complete", &mut ro.checksum_complete_args),
    ];
    for (function, slot) in slots {
        if let Some(args) = backend::function_args(function) {
            *slot = args;
        }
    }
}

/// The payload bytes packet records have room for: the snap length rounded
/// up to 8, as ring-buffer records are.
fn payload_room(snaplen: u32) -> u32 {
    snaplen.next_multiple_of(8)
}

/// The largest packet record's size in a ring buffer, with its header (each
/// is as long as its payload, up to the snap length).
pub(crate) fn packet_record_bytes(snaplen: u32) -> u32 {
    (mem::size_of::<crate::bpf::types::udp_event>() as u32) + payload_room(snaplen) + 8
}

/// Pending bytes that wake the consumer when the caller set none: 64 KiB of
/// records without payload, and as many records when they are larger (each
/// wake-up is an interrupt, whatever the record size): records as long as
/// the snap length, up to a full Ethernet frame's payload (records follow
/// each datagram's length, and most are no longer), but never more than a
/// quarter of the ring, so that the pending data can reach it.
fn default_wakeup_bytes(snaplen: u32, ring_bytes: u32) -> u64 {
    const TYPICAL_PAYLOAD: u32 = 1472;
    let records = (64 << 10) / packet_record_bytes(0);
    let wakeup = u64::from(records) * u64::from(packet_record_bytes(snaplen.min(TYPICAL_PAYLOAD)));
    wakeup.min(u64::from(ring_bytes) / 4)
}

/// A ring buffer for each possible CPU (one page each when counting:
/// nothing goes through them then), and their size.
fn create_rings(b: &Settings) -> Result<(Vec<MapHandle>, u32), Error> {
    let cpus = libbpf_rs::num_possible_cpus().map_err(Error::bpf("counting the possible CPUs"))?;
    let bytes = match b.count_by {
        Some(_) => 4096,
        None => b.ring_buffer_bytes.unwrap_or(default_ring_bytes(cpus)),
    };
    let opts = libbpf_rs::libbpf_sys::bpf_map_create_opts {
        sz: mem::size_of::<libbpf_rs::libbpf_sys::bpf_map_create_opts>() as _,
        ..Default::default()
    };
    let rings = (0..cpus)
        .map(|_| MapHandle::create(MapType::RingBuf, Some("udptrace_ring"), 0, 0, bytes, &opts))
        .collect::<Result<_, _>>()
        .map_err(Error::bpf("creating the ring buffers"))?;
    Ok((rings, bytes))
}

/// 4 MiB per CPU on up to 4 CPUs; beyond, 16 MiB shared out, but at least 1 MiB each.
fn default_ring_bytes(cpus: usize) -> u32 {
    let share = (16usize << 20) / cpus.max(1);
    let power_of_two = 1usize << share.ilog2();
    power_of_two.clamp(1 << 20, 4 << 20) as u32
}

#[cfg(test)]
mod tests {
    use super::{default_ring_bytes, default_wakeup_bytes, packet_record_bytes, rejected_program};

    #[test]
    fn a_failed_load_names_its_program() {
        let failed = "libbpf: prog 'seed_owners': BPF program load failed: -EACCES\n";
        assert_eq!(rejected_program(failed), Some("seed_owners"));
        let other = "libbpf: prog 'seed_owners': failed to load: -EACCES\n";
        assert_eq!(rejected_program(other), None);
        assert_eq!(
            rejected_program("libbpf: failed to load object 'x'\n"),
            None
        );
    }

    #[test]
    fn default_rings_take_at_most_16_mib_but_1_mib_each() {
        assert_eq!(default_ring_bytes(1), 4 << 20);
        assert_eq!(default_ring_bytes(4), 4 << 20);
        assert_eq!(default_ring_bytes(6), 2 << 20);
        assert_eq!(default_ring_bytes(16), 1 << 20);
        assert_eq!(default_ring_bytes(256), 1 << 20);
    }

    #[test]
    fn default_wakeup_is_as_many_records_whatever_their_size_within_a_quarter_ring() {
        let small = default_wakeup_bytes(0, 4 << 20);
        assert!((64_000..=65_536).contains(&small), "{small}");
        let records = small / u64::from(packet_record_bytes(0));
        let large = default_wakeup_bytes(1000, 64 << 20);
        assert_eq!(large, records * u64::from(packet_record_bytes(1000)));
        // Records follow their datagrams' length: a whole-datagram snap
        // length counts on records of a full Ethernet frame's payload.
        let whole = default_wakeup_bytes(crate::MAX_SNAPLEN, 64 << 20);
        assert_eq!(whole, records * u64::from(packet_record_bytes(1472)));
        assert_eq!(default_wakeup_bytes(1500, 1 << 20), 256 << 10);
        assert_eq!(default_wakeup_bytes(0, 4096), 1024);
    }
}
