//! Names of the kernel's drop reasons, read from its BTF: the numbering of
//! `enum skb_drop_reason` changes between kernel versions. Kernels before
//! Linux 5.17 give no reasons: there the programs tell the drops they can
//! (a socket that refused a datagram) from the rest, under codes of our own.

use std::collections::HashMap;
use std::sync::OnceLock;

use libbpf_rs::btf::types::Enum;

const PREFIX: &str = "SKB_DROP_REASON_";

/// The reasons the programs give where the kernel has none.
const OWN_REASONS: [(u32, &str); 5] = [
    (2, "NOT_SPECIFIED"),
    (3, "NO_SOCKET"),
    (4, "SOCKET_RCVBUFF"),
    (5, "PROTO_MEM"),
    (6, "UDP_CSUM"),
];

fn reasons() -> &'static HashMap<u32, String> {
    static REASONS: OnceLock<HashMap<u32, String>> = OnceLock::new();
    REASONS.get_or_init(|| {
        let own = || {
            OWN_REASONS
                .iter()
                .map(|&(c, n)| (c, n.to_owned()))
                .collect()
        };
        let Some(btf) = crate::sys::kernel_btf() else {
            return own();
        };
        let Some(reasons) = btf.type_by_name::<Enum<'_>>("skb_drop_reason") else {
            return own();
        };
        reasons
            .iter()
            .filter_map(|m| {
                let name = m.name?.to_string_lossy();
                let name = name.strip_prefix(PREFIX).unwrap_or(&name).to_string();
                Some((u32::try_from(m.value).ok()?, name))
            })
            .collect()
    })
}

/// The name of drop reason `code` without the `SKB_DROP_REASON_` prefix
/// (`NO_SOCKET`, `SOCKET_RCVBUFF`, `UDP_CSUM`), or `reason N` when the kernel
/// does not name it.
pub fn drop_reason_name(code: u32) -> String {
    reasons()
        .get(&code)
        .cloned()
        .unwrap_or_else(|| format!("reason {code}"))
}

/// The code of drop reason `name` (without prefix) on this kernel.
pub(crate) fn drop_reason_code(name: &str) -> Option<u32> {
    reasons()
        .iter()
        .find_map(|(code, n)| (n == name).then_some(*code))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_reason_is_named_by_number() {
        assert_eq!(drop_reason_name(u32::MAX), format!("reason {}", u32::MAX));
    }

    #[test]
    fn this_kernel_names_the_udp_reasons() {
        let names: Vec<String> = reasons().values().cloned().collect();
        for want in ["NO_SOCKET", "SOCKET_RCVBUFF", "UDP_CSUM"] {
            assert!(names.iter().any(|n| n == want), "{want} missing: {names:?}");
        }
    }
}
