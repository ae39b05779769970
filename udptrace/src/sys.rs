//! What the tracer needs from the system: privileges, BTF, the cgroup v2 mount.

use std::fs;
use std::path::{Path, PathBuf};

use libbpf_rs::Btf;

use crate::Error;

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

pub(crate) use crate::error::VMLINUX_BTF;

/// The effective capability set of this process.
fn effective_caps() -> u64 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0)
}

/// Capabilities the tracer lacks: loading tracing programs needs CAP_BPF and
/// CAP_PERFMON, loading and attaching cgroup programs CAP_NET_ADMIN; the
/// kernel accepts CAP_SYS_ADMIN for each of the three.
pub fn missing_capabilities() -> Vec<&'static str> {
    missing_from(effective_caps())
}

fn missing_from(caps: u64) -> Vec<&'static str> {
    let has = |cap: u32| caps & (1 << cap) != 0;
    let mut missing = Vec::new();
    if !has(CAP_BPF) && !has(CAP_SYS_ADMIN) {
        missing.push("CAP_BPF");
    }
    if !has(CAP_PERFMON) && !has(CAP_SYS_ADMIN) {
        missing.push("CAP_PERFMON");
    }
    if !has(CAP_NET_ADMIN) && !has(CAP_SYS_ADMIN) {
        missing.push("CAP_NET_ADMIN");
    }
    missing
}

pub(crate) fn check_privileges() -> Result<(), Error> {
    let missing = missing_capabilities();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Error::Privileges(missing.join(", ")))
    }
}

/// The running kernel's types (its BTF).
pub(crate) fn kernel_btf() -> Option<Btf<'static>> {
    Btf::from_vmlinux().ok()
}

pub(crate) fn check_btf() -> Result<(), Error> {
    if Path::new(VMLINUX_BTF).exists() {
        Ok(())
    } else {
        Err(Error::NoBtf)
    }
}

/// Where the cgroup v2 hierarchy is mounted (`/sys/fs/cgroup` on unified
/// systems, `/sys/fs/cgroup/unified` on hybrid ones).
pub fn cgroup2_mount() -> Result<PathBuf, Error> {
    let mounts = fs::read_to_string("/proc/mounts")
        .map_err(|e| Error::System(format!("cannot read /proc/mounts: {e}")))?;
    cgroup2_in(&mounts).ok_or(Error::NoCgroup2)
}

fn cgroup2_in(mounts: &str) -> Option<PathBuf> {
    mounts.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let (_dev, dir, fstype) = (fields.next()?, fields.next()?, fields.next()?);
        (fstype == "cgroup2").then(|| PathBuf::from(unescape_mount_path(dir)))
    })
}

/// /proc/mounts writes space, tab, newline and backslash as octal escapes.
fn unescape_mount_path(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let code = rest
            .get(i + 1..i + 4)
            .and_then(|o| u8::from_str_radix(o, 8).ok());
        match code {
            Some(c) => {
                out.push(c as char);
                rest = &rest[i + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Whether /proc/kallsyms gives the kernel's memory layout (`vmemmap_base`
/// and `page_offset_base`, non-zero), which reading payload from page
/// fragments on the fentry and kprobe backends needs: Err says why not.
pub fn kernel_layout_visible() -> Result<(), &'static str> {
    let symbols =
        std::fs::read_to_string("/proc/kallsyms").map_err(|_| "/proc/kallsyms unreadable")?;
    let mut found = [false; 2];
    for line in symbols.lines() {
        let mut fields = line.split_whitespace();
        let (Some(addr), Some(_), Some(name)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let slot = match name {
            "vmemmap_base" => 0,
            "page_offset_base" => 1,
            _ => continue,
        };
        if addr.bytes().all(|b| b == b'0') {
            return Err("/proc/kallsyms hides kernel addresses (needs CAP_SYSLOG)");
        }
        found[slot] = true;
    }
    match found {
        [true, true] => Ok(()),
        _ => Err("the kernel's memory layout is not randomised: no symbols to read it from"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cgroup2_in_hybrid_layout() {
        let mounts = "tmpfs /sys/fs/cgroup tmpfs rw 0 0\n\
                      cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\n\
                      cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n";
        assert_eq!(
            cgroup2_in(mounts),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(
            cgroup2_in("cgroup /sys/fs/cgroup/cpu cgroup rw 0 0\n"),
            None
        );
    }

    #[test]
    fn unescapes_mount_paths() {
        assert_eq!(unescape_mount_path(r"/mnt/my\040cgroup"), "/mnt/my cgroup");
        assert_eq!(unescape_mount_path(r"/a\\b"), r"/a\\b");
    }

    #[test]
    fn names_missing_capabilities() {
        assert_eq!(
            missing_from(0),
            vec!["CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN"]
        );
        assert!(missing_from(u64::MAX).is_empty());
        let bpf_perfmon = (1 << CAP_BPF) | (1 << CAP_PERFMON);
        assert_eq!(missing_from(bpf_perfmon), vec!["CAP_NET_ADMIN"]);
        assert!(missing_from(1 << CAP_SYS_ADMIN).is_empty());
        assert_eq!(
            missing_from(1 << CAP_NET_ADMIN),
            vec!["CAP_BPF", "CAP_PERFMON"]
        );
    }
}
