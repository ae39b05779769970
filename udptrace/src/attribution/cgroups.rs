//! Cgroups as people know them: an event's cgroup v2 id resolved to its path,
//! and from the path to the container and Kubernetes pod it belongs to.
//!
//! The kernel reports a cgroup by id (its directory's inode number).
//! [`CgroupResolver`] turns ids into paths with `open_by_handle_at`, one call
//! per cgroup first seen, and keeps a bounded cache: a cgroup created after
//! tracing started resolves on first sight, and ids of removed cgroups age
//! out instead of piling up.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use crate::sys::cgroup2_mount;
use crate::Error;

/// The rule of [`Filter::cgroup`](crate::Filter::cgroup)'s form: a plain path, without `.` or `..`
/// (whether that cgroup exists is only known at start).
pub fn check_cgroup_path(path: &Path) -> Result<(), Error> {
    let plain = path
        .components()
        .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if !plain {
        return Err(Error::InvalidFilter(format!(
            "cgroup {} must be a plain path below the cgroup mount (no '..')",
            path.display()
        )));
    }
    Ok(())
}

/// The rule of [`Filter::container`](crate::Filter::container)'s form: 1 to 64 hex digits, as
/// `docker` takes ids (which container it names is only known at start).
pub fn check_container_prefix(prefix: &str) -> Result<(), Error> {
    if prefix.is_empty() || prefix.len() > 64 || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::InvalidFilter(format!(
            "container id '{}' must be 1 to 64 hex digits",
            prefix.escape_debug()
        )));
    }
    Ok(())
}

/// What a cgroup id stands for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CgroupInfo {
    /// The cgroup's path below the cgroup v2 mount, `/` for the root:
    /// `/system.slice/docker-<id>.scope`.
    pub path: String,
    /// The container whose cgroup this is (or is below): the 64-hex id
    /// Docker, containerd, CRI-O and Podman give it.
    pub container_id: Option<String>,
    /// The Kubernetes pod, by UID (with dashes, as the API shows it).
    pub pod_uid: Option<String>,
}

impl CgroupInfo {
    /// A cgroup known by its path below the mount.
    pub fn from_path(path: &str) -> CgroupInfo {
        CgroupInfo {
            path: path.to_string(),
            container_id: container_id_in(path).map(str::to_string),
            pod_uid: pod_uid_in(path),
        }
    }

    /// The container id's first 12 characters, as `docker ps` shows it.
    pub fn short_container_id(&self) -> Option<&str> {
        let id = self.container_id.as_deref()?;
        Some(id.get(..12).unwrap_or(id))
    }
}

/// Prefixes container runtimes give a container's cgroup: a systemd scope
/// (`docker-<id>.scope`), or a plain directory under the cgroupfs driver
/// (Podman's `libpod-<id>`, CRI-O's `crio-<id>`). Their helpers' cgroups
/// (`libpod-conmon-<id>`, `crio-conmon-<id>`) do not match: `conmon-<id>` is
/// no id.
const RUNTIME_PREFIXES: [&str; 6] = [
    "docker-",
    "cri-containerd-",
    "crio-",
    "libpod-",
    "containerd-",
    "nerdctl-",
];

/// Podman's parent cgroup under the cgroupfs driver. Its containers are
/// `libpod-<id>` in it; a bare id there is a pod's cgroup, not a container's.
const PODMAN_CGROUPFS_PARENT: &str = "libpod_parent";

fn is_container_id(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The container id in a cgroup path: that of the deepest component that
/// names a container (a container's own sub-cgroups, such as Podman's
/// `libpod-<id>.scope/container`, are the container's).
pub fn container_id_in(path: &str) -> Option<&str> {
    let mut names = path.rsplit('/').peekable();
    while let Some(name) = names.next() {
        if let Some(id) = container_id_of(name, names.peek().copied()) {
            return Some(id);
        }
    }
    None
}

/// The container a cgroup named `name`, in a cgroup named `parent`, is:
/// `<64hex>` (the cgroupfs drivers of Docker, containerd and kubelet:
/// `/docker/<id>`, `/default/<id>`, `/kubepods/burstable/pod<uid>/<id>`) or
/// `<runtime>-<64hex>[.scope]`.
fn container_id_of<'a>(name: &'a str, parent: Option<&str>) -> Option<&'a str> {
    if is_container_id(name) {
        return (parent != Some(PODMAN_CGROUPFS_PARENT)).then_some(name);
    }
    let unit = name.strip_suffix(".scope").unwrap_or(name);
    let id = RUNTIME_PREFIXES.iter().find_map(|p| unit.strip_prefix(p))?;
    is_container_id(id).then_some(id)
}

/// The pod UID in a cgroup path: `pod<uid>` (cgroupfs driver) or
/// `kubepods[-<qos>]-pod<uid_with_underscores>.slice` (systemd driver).
pub fn pod_uid_in(path: &str) -> Option<String> {
    path.rsplit('/').find_map(|c| {
        let uid = match c.strip_suffix(".slice") {
            Some(slice) => slice.rsplit_once("-pod")?.1.replace('_', "-"),
            None => c.strip_prefix("pod")?.to_string(),
        };
        is_uid(&uid).then_some(uid)
    })
}

/// `8-4-4-4-12` hex digits.
fn is_uid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The handle type of kernfs (cgroup) files for `open_by_handle_at`: the
/// handle is the node's 64-bit id, which is the cgroup id.
const FILEID_KERNFS: i32 = 0xfe;

#[repr(C)]
struct KernfsHandle {
    handle_bytes: u32,
    handle_type: i32,
    id: u64,
}

/// A failure to resolve that may pass (out of file descriptors, say).
struct Transient;

/// Most cgroups a resolver remembers; beyond it the least recently seen go.
pub const CGROUP_CACHE_SIZE: usize = 4096;

/// Resolves cgroup ids to [`CgroupInfo`], with a bounded cache.
pub struct CgroupResolver {
    mount: PathBuf,
    mount_fd: Option<OwnedFd>,
    /// Each id with when it was last used; `None`: the cgroup is gone.
    cache: HashMap<u64, (Option<Arc<CgroupInfo>>, u64)>,
    clock: u64,
    capacity: usize,
}

impl CgroupResolver {
    /// A resolver of the cgroup v2 hierarchy's ids. Without one mounted (or
    /// the right to open by handle) ids resolve to nothing.
    pub fn new() -> CgroupResolver {
        let mount = cgroup2_mount().unwrap_or_else(|_| PathBuf::from("/sys/fs/cgroup"));
        Self::with_mount(mount, CGROUP_CACHE_SIZE)
    }

    pub(crate) fn with_mount(mount: PathBuf, capacity: usize) -> CgroupResolver {
        let mount_fd = CString::new(mount.as_os_str().as_bytes())
            .ok()
            .and_then(|c| {
                // SAFETY: a valid NUL-terminated path; the fd is owned below.
                let fd = unsafe {
                    libc::open(
                        c.as_ptr(),
                        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
                    )
                };
                // SAFETY: a fresh fd nobody else owns.
                (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
            });
        CgroupResolver {
            mount,
            mount_fd,
            cache: HashMap::new(),
            clock: 0,
            capacity: capacity.max(2),
        }
    }

    /// The cgroup of `id`, or `None` for id 0 and cgroups gone before they
    /// were first seen.
    pub fn resolve(&mut self, id: u64) -> Option<Arc<CgroupInfo>> {
        if id == 0 {
            return None;
        }
        self.clock += 1;
        if let Some((info, used)) = self.cache.get_mut(&id) {
            *used = self.clock;
            return info.clone();
        }
        let info = match self.path_of(id) {
            Ok(path) => path.map(|p| Arc::new(CgroupInfo::from_path(&p))),
            // Not remembered: the next event of this cgroup tries again.
            Err(Transient) => return None,
        };
        if self.cache.len() >= self.capacity {
            self.evict();
        }
        self.cache.insert(id, (info.clone(), self.clock));
        info
    }

    /// Cgroups remembered now.
    pub fn cached(&self) -> usize {
        self.cache.len()
    }

    /// Forgets the least recently used half: a sweep every `capacity / 2`
    /// new cgroups, so constant time per cgroup.
    fn evict(&mut self) {
        let mut ages: Vec<u64> = self.cache.values().map(|(_, used)| *used).collect();
        let keep = self.capacity / 2;
        let (_, cut, _) = ages.select_nth_unstable(self.cache.len() - keep);
        let cut = *cut;
        self.cache.retain(|_, (_, used)| *used >= cut);
    }

    /// The path of cgroup `id` below the mount, from the kernel; `None` if
    /// the cgroup is gone (or cgroups cannot be named here).
    fn path_of(&mut self, id: u64) -> Result<Option<String>, Transient> {
        let Some(mount_fd) = self.mount_fd.as_ref() else {
            return Ok(None);
        };
        let mut handle = KernfsHandle {
            handle_bytes: 8,
            handle_type: FILEID_KERNFS,
            id,
        };
        // SAFETY: the handle is a file_handle with 8 bytes of f_handle; the fd is owned below.
        let fd = unsafe {
            libc::open_by_handle_at(
                mount_fd.as_raw_fd(),
                (&mut handle as *mut KernfsHandle).cast(),
                libc::O_RDONLY | libc::O_CLOEXEC | libc::O_PATH,
            )
        };
        if fd < 0 {
            return match std::io::Error::last_os_error().raw_os_error() {
                Some(libc::ESTALE | libc::ENOENT) => Ok(None),
                // Not allowed (no CAP_DAC_READ_SEARCH), nor will it be: stop asking.
                Some(libc::EPERM | libc::EACCES) => {
                    self.mount_fd = None;
                    Ok(None)
                }
                _ => Err(Transient),
            };
        }
        // SAFETY: a fresh fd nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let link = format!("/proc/self/fd/{}", fd.as_raw_fd());
        let full = fs::read_link(link).map_err(|_| Transient)?;
        Ok(full
            .strip_prefix(&self.mount)
            .ok()
            .map(|rel| format!("/{}", rel.to_string_lossy())))
    }
}

impl Default for CgroupResolver {
    fn default() -> Self {
        Self::new()
    }
}

/// A cgroup to filter by: its id and depth below the root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CgroupTarget {
    pub id: u64,
    pub level: u32,
}

/// A cgroup named by its path: absolute (under the mount) or below the mount.
pub(crate) fn cgroup_target(path: &Path) -> Result<CgroupTarget, Error> {
    check_cgroup_path(path)?;
    let mount = cgroup2_mount()?;
    let rel = path.strip_prefix(&mount).unwrap_or(path);
    let rel = rel.strip_prefix("/").unwrap_or(rel);
    let dir = mount.join(rel);
    let meta = fs::metadata(&dir)
        .map_err(|e| Error::InvalidFilter(format!("no cgroup {}: {e}", dir.display())))?;
    if !meta.is_dir() || !dir.join("cgroup.procs").exists() {
        return Err(Error::InvalidFilter(format!(
            "{} is not a cgroup v2 directory",
            dir.display()
        )));
    }
    let level = rel.components().count() as u32;
    Ok(CgroupTarget {
        id: meta.ino(),
        level,
    })
}

/// The cgroup of the one container whose id starts with `prefix` (as
/// `docker` takes ids): the shallowest cgroup that names it.
pub(crate) fn container_cgroup(prefix: &str) -> Result<PathBuf, Error> {
    check_container_prefix(prefix)?;
    let prefix = prefix.to_ascii_lowercase();
    let mount = cgroup2_mount()?;
    let mut found: HashMap<String, PathBuf> = HashMap::new();
    let mut dirs = vec![mount.clone()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let path = entry.path();
            let name = entry.file_name();
            let parent = dir.file_name().map(|p| p.to_string_lossy());
            match container_id_of(&name.to_string_lossy(), parent.as_deref()) {
                // Shallowest first: a container's own sub-cgroups are below it.
                Some(id) if id.starts_with(&prefix) => {
                    found.entry(id.to_string()).or_insert(path);
                }
                _ => dirs.push(path),
            }
        }
    }
    let mut ids: Vec<_> = found.into_iter().collect();
    match ids.len() {
        0 => Err(Error::InvalidFilter(format!(
            "no container's cgroup has an id starting with '{prefix}'"
        ))),
        1 => Ok(ids.pop().expect("one").1),
        n => Err(Error::InvalidFilter(format!(
            "container id '{prefix}' is ambiguous: {n} containers' ids start with it"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f4e5a6b7c8d9e0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7081";
    const UID: &str = "1b2c3d4e-5f60-4718-8a9b-0c1d2e3f4a5b";

    fn info(path: &str) -> (Option<String>, Option<String>) {
        let i = CgroupInfo::from_path(path);
        (i.container_id, i.pod_uid)
    }

    /// A Podman pod's id: 64 hex digits too.
    const POD: &str = "9a8b7c6d5e4f30211d2c3b4a5968778695a4b3c2d1e0f9e8d7c6b5a493827160";

    #[test]
    fn finds_containers_in_engine_layouts() {
        for path in [
            // Docker: systemd driver, rootless, cgroupfs driver, and a
            // container's own sub-cgroups (systemd running in it).
            format!("/system.slice/docker-{ID}.scope"),
            format!("/user.slice/user-1000.slice/user@1000.service/user.slice/docker-{ID}.scope"),
            format!("/docker/{ID}"),
            format!("/docker/{ID}/system.slice/nginx.service"),
            // containerd (nerdctl, ctr): systemd driver; cgroupfs, by namespace.
            format!("/system.slice/nerdctl-{ID}.scope"),
            format!("/default/{ID}"),
            // CRI-O outside Kubernetes.
            format!("/system.slice/crio-{ID}.scope"),
            format!("/crio/crio-{ID}"),
            // Podman: systemd driver (crun's payload in a child), rootless,
            // in a pod; cgroupfs driver, alone and in a pod.
            format!("/machine.slice/libpod-{ID}.scope"),
            format!("/machine.slice/libpod-{ID}.scope/container"),
            format!(
                "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope/container"
            ),
            format!("/machine.slice/machine-libpod_pod_{POD}.slice/libpod-{ID}.scope/container"),
            format!("/libpod_parent/libpod-{ID}"),
            format!("/libpod_parent/{POD}/libpod-{ID}"),
        ] {
            assert_eq!(info(&path), (Some(ID.to_string()), None), "{path}");
        }
    }

    /// kubelet's pod cgroups, by QoS class, as its systemd driver names
    /// them, and as its cgroupfs driver does.
    fn pod_cgroups() -> Vec<String> {
        let uid_ = UID.replace('-', "_");
        vec![
            format!("/kubepods.slice/kubepods-pod{uid_}.slice"),
            format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice"),
            format!(
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid_}.slice"
            ),
            format!("/kubepods/pod{UID}"),
            format!("/kubepods/burstable/pod{UID}"),
            format!("/kubepods/besteffort/pod{UID}"),
        ]
    }

    #[test]
    fn finds_pods_and_their_containers() {
        for pod in pod_cgroups() {
            let systemd = pod.starts_with("/kubepods.slice");
            // containerd, CRI-O (its payload in a child with crun), Docker
            // through cri-dockerd.
            let containers = if systemd {
                vec![
                    format!("cri-containerd-{ID}.scope"),
                    format!("crio-{ID}.scope"),
                    format!("crio-{ID}.scope/container"),
                    format!("docker-{ID}.scope"),
                ]
            } else {
                vec![ID.to_string(), format!("crio-{ID}")]
            };
            for c in containers {
                let path = format!("{pod}/{c}");
                assert_eq!(info(&path), (Some(ID.into()), Some(UID.into())), "{path}");
            }
            // The pod's own cgroup, and CRI-O's monitor beside its container.
            assert_eq!(info(&pod), (None, Some(UID.into())), "{pod}");
            let conmon = match systemd {
                true => format!("{pod}/crio-conmon-{ID}.scope"),
                false => format!("{pod}/crio-conmon-{ID}"),
            };
            assert_eq!(info(&conmon), (None, Some(UID.into())), "{conmon}");
        }
        // A cluster in a container (kind): the pod's container, not the node's.
        let node = "5".repeat(64);
        let uid_ = UID.replace('-', "_");
        let kind = format!(
            "/system.slice/docker-{node}.scope/kubelet.slice/kubelet-kubepods.slice/\
             kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{uid_}.slice/\
             cri-containerd-{ID}.scope"
        );
        assert_eq!(info(&kind), (Some(ID.into()), Some(UID.into())));
    }

    #[test]
    fn ignores_lookalikes_and_helpers() {
        for path in [
            "/",
            "/system.slice/ssh.service",
            "/system.slice/docker.service",
            "/user.slice/user-0.slice/session-1.scope",
            "/kubepods.slice/kubepods-besteffort.slice",
            "/podman.slice",
            &format!("/docker/{}", &ID[..63]),
            &format!("/docker/{}", ID.to_uppercase()),
            &format!("/docker/{ID}0"),
            &format!("/system.slice/docker-{ID}.service"),
            // The runtimes' monitors, beside their containers.
            &format!("/system.slice/crio-conmon-{ID}.scope"),
            &format!("/machine.slice/libpod-conmon-{ID}.scope"),
            "/libpod_parent/conmon",
            // Podman's pods: their cgroups hold containers, and monitors.
            &format!("/machine.slice/machine-libpod_pod_{POD}.slice"),
            &format!("/libpod_parent/{POD}"),
            &format!("/libpod_parent/{POD}/conmon"),
        ] {
            assert_eq!(info(path), (None, None), "{path}");
        }
    }

    #[test]
    fn an_engine_in_a_container_is_the_container() {
        // Podman run in a Docker container: its monitor is the Docker container's.
        let inner = format!("/docker/{ID}/libpod_parent/{POD}/conmon");
        assert_eq!(info(&inner), (Some(ID.into()), None));
    }

    #[test]
    fn short_id_is_docker_ps() {
        let i = CgroupInfo::from_path(&format!("/docker/{ID}"));
        assert_eq!(i.short_container_id(), Some(&ID[..12]));
    }

    #[test]
    fn cache_stays_bounded() {
        let mut r = CgroupResolver::with_mount(PathBuf::from("/nonexistent"), 100);
        for id in 1..=10_000 {
            assert_eq!(r.resolve(id), None);
            assert!(r.cached() <= 100);
        }
        // Recently used ids survive the sweeps.
        r.resolve(42);
        for id in 20_000..20_060 {
            r.resolve(id);
            r.resolve(42);
        }
        assert!(r.cache.contains_key(&42));
    }
}
