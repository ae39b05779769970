//! What this kernel supports: each backend is really loaded and attached,
//! then detached, so the answer is the one a tracer would get.

use crate::backend::Backend;
use crate::{sys, CountField, EventKind, Filter, Tracer, TracerBuilder};

/// The outcome of trying one backend.
#[derive(Debug, Clone)]
pub struct BackendCheck {
    pub backend: Backend,
    /// The probes it attached, or why it cannot run.
    pub result: Result<Vec<String>, String>,
}

/// What `udptrace doctor` reports.
#[derive(Debug, Clone)]
pub struct Diagnosis {
    pub kernel: String,
    pub btf: bool,
    pub cgroup2: Option<String>,
    pub missing_capabilities: Vec<&'static str>,
    /// Whether fentry and kprobe can read payload from page fragments
    /// ([`sys::kernel_layout_visible`]).
    pub paged_payload: Result<(), &'static str>,
    /// Every backend, in the order `auto` tries them.
    pub backends: Vec<BackendCheck>,
    /// The modes that load other programs than socket events, as `auto`
    /// runs them (none when no backend can run).
    pub modes: Vec<ModeCheck>,
}

/// The outcome of starting one mode.
#[derive(Debug, Clone)]
pub struct ModeCheck {
    /// The command that runs the mode, as a user types it.
    pub mode: &'static str,
    /// How many probes it attached, or why it cannot run.
    pub result: Result<usize, String>,
}

impl Diagnosis {
    /// The backend `auto` picks: the first that attached.
    pub fn auto(&self) -> Option<Backend> {
        self.backends
            .iter()
            .find(|c| c.result.is_ok())
            .map(|c| c.backend)
    }
}

/// Checks the kernel and tries every backend.
pub fn diagnose() -> Diagnosis {
    let backends: Vec<BackendCheck> = Backend::ALL
        .into_iter()
        .map(|backend| BackendCheck {
            backend,
            result: Tracer::builder()
                .backend(backend)
                .ring_buffer_size(4096)
                .start()
                .map(|t| t.probes().to_vec())
                .map_err(|e| e.to_string()),
        })
        .collect();
    let any_backend = backends.iter().any(|c: &BackendCheck| c.result.is_ok());
    Diagnosis {
        modes: if any_backend {
            check_modes()
        } else {
            Vec::new()
        },
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "unknown".into()),
        btf: sys::check_btf().is_ok(),
        cgroup2: sys::cgroup2_mount().ok().map(|p| p.display().to_string()),
        missing_capabilities: sys::missing_capabilities(),
        paged_payload: sys::kernel_layout_visible(),
        backends,
    }
}

/// Starts every mode whose programs differ from socket events' (other hooks,
/// or the same hooks with other paths for the verifier to check), configured
/// as its command configures it.
fn check_modes() -> Vec<ModeCheck> {
    let of = |kinds: Vec<EventKind>| {
        Tracer::builder().ring_buffer_size(4096).filter(Filter {
            kinds,
            ..Default::default()
        })
    };
    let packets = vec![EventKind::PacketSend, EventKind::PacketRecv];
    let counted = || vec![EventKind::Send, EventKind::Recv, EventKind::Drop];
    let modes: [(&'static str, TracerBuilder); 7] = [
        ("trace --packets --snaplen 64", of(packets).snaplen(64)),
        ("drops", of(vec![EventKind::Drop])),
        (
            "count --by dport",
            of(vec![EventKind::Send, EventKind::Recv]).count_by(vec![CountField::Dport]),
        ),
        (
            "top",
            of(counted()).count_by(vec![
                CountField::Pid,
                CountField::Comm,
                CountField::Event,
                CountField::Reason,
            ]),
        ),
        (
            "serve",
            of(counted()).count_by(vec![
                CountField::Comm,
                CountField::Event,
                CountField::Reason,
                CountField::Errno,
            ]),
        ),
        ("life", of(vec![EventKind::Close]).track_sockets(true)),
        (
            "rcvbuf",
            of(vec![EventKind::Close]).track_receive_buffers(true),
        ),
    ];
    modes
        .into_iter()
        .map(|(mode, builder)| ModeCheck {
            mode,
            result: builder
                .start()
                .map(|t| t.probes().len())
                .map_err(|e| e.to_string()),
        })
        .collect()
}
