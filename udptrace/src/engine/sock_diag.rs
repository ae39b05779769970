//! Lists a network namespace's UDP sockets through the kernel's socket
//! diagnostics (`NETLINK_SOCK_DIAG`, what `ss -u` reads). Listing a socket
//! gives it its cookie: on kernels whose BPF iterators may not ask for one
//! (before Linux 5.12), this is how the sockets that exist as tracing starts
//! get theirs.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;

/// Lists this network namespace's UDP sockets, which gives each its cookie;
/// a failure (a kernel without UDP socket diagnostics) is noted for
/// [`listing_failed`].
pub(crate) fn list_udp_sockets() -> io::Result<()> {
    let listed = list_once();
    if listed.is_err() {
        LISTING_FAILED.store(true, Ordering::Relaxed);
    }
    listed
}

/// A listing of UDP sockets failed in this process: [`crate::features::kernel_limits`] says so.
static LISTING_FAILED: AtomicBool = AtomicBool::new(false);

pub(crate) fn listing_failed() -> bool {
    LISTING_FAILED.load(Ordering::Relaxed)
}

/// Lists every UDP socket, IPv4 and IPv6, of the calling thread's network
/// namespace; the answers themselves are not needed.
fn list_once() -> io::Result<()> {
    // SAFETY: plain socket(2); the descriptor is owned from here on.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by socket(2) and is not owned elsewhere.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    for family in [libc::AF_INET, libc::AF_INET6] {
        send_request(&sock, family as u8)?;
        read_until_done(&sock)?;
    }
    Ok(())
}

/// A dump request (struct nlmsghdr + struct inet_diag_req_v2) for UDP
/// sockets of `family` in every state.
fn send_request(sock: &OwnedFd, family: u8) -> io::Result<()> {
    let mut msg = [0u8; 16 + 56];
    let len = msg.len() as u32;
    msg[0..4].copy_from_slice(&len.to_ne_bytes());
    msg[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    msg[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    msg[16] = family;
    msg[17] = libc::IPPROTO_UDP as u8;
    msg[20..24].copy_from_slice(&u32::MAX.to_ne_bytes()); // every state
                                                          // SAFETY: sends msg.len() bytes from a live buffer.
    let sent = unsafe { libc::send(sock.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Reads the answers until the dump is done; an error message is returned
/// as an error (ENOENT: the kernel has no UDP diagnostics module).
fn read_until_done(sock: &OwnedFd) -> io::Result<()> {
    let mut buf = vec![0u8; 32 << 10];
    loop {
        // SAFETY: receives into a live buffer of buf.len() bytes.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        let mut rest = &buf[..n as usize];
        while rest.len() >= 16 {
            let len = u32::from_ne_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
            let kind = u16::from_ne_bytes(rest[4..6].try_into().expect("2 bytes"));
            match kind {
                NLMSG_DONE => return Ok(()),
                NLMSG_ERROR if rest.len() >= 20 => {
                    let code = i32::from_ne_bytes(rest[16..20].try_into().expect("4 bytes"));
                    return match code {
                        0 => Ok(()),
                        _ => Err(io::Error::from_raw_os_error(-code)),
                    };
                }
                _ => {}
            }
            // Messages are aligned to 4 bytes.
            let step = len.next_multiple_of(4);
            if len < 16 || step > rest.len() {
                break;
            }
            rest = &rest[step..];
        }
        if n == 0 {
            return Ok(());
        }
    }
}
