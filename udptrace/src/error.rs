//! Errors a tracer reports: each one a single line a user can act on.

/// Where the kernel shows its BTF, which [`Error::NoBtf`] names.
pub(crate) const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Why a tracer could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("insufficient privileges: missing {0} (run as root, or grant CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN)")]
    Privileges(String),
    #[error(
        "this kernel has no BTF ({}): udptrace needs a kernel built with CONFIG_DEBUG_INFO_BTF=y",
        VMLINUX_BTF
    )]
    NoBtf,
    #[error("no cgroup v2 hierarchy is mounted (mount -t cgroup2 none /sys/fs/cgroup/unified)")]
    NoCgroup2,
    #[error("invalid filter: {0}")]
    InvalidFilter(String),
    #[error("no backend can run on this kernel: {0}")]
    NoBackend(String),
    #[error("backend '{backend}' cannot run on this kernel: {reason}")]
    BackendUnavailable {
        backend: &'static str,
        reason: String,
    },
    /// A libbpf call failed; `UDPTRACE_DEBUG=1` shows libbpf's own log.
    #[error("{what}: {source}")]
    Bpf {
        what: String,
        source: libbpf_rs::Error,
    },
    #[error("{0}")]
    System(String),
    #[error("the tracer's reader thread stopped unexpectedly")]
    ReaderGone,
}

impl Error {
    pub(crate) fn bpf(what: impl Into<String>) -> impl FnOnce(libbpf_rs::Error) -> Error {
        let what = what.into();
        move |source| Error::Bpf { what, source }
    }
}
