//! What this kernel supports: each backend is really loaded and attached,
//! then detached, so the answer is the one a tracer would get.

use crate::backend::Backend;
use crate::{sys, Tracer};

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
    let backends = Backend::ALL
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
    Diagnosis {
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
