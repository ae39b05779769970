//! Property tests of the library's parsers: pure functions, no BPF. Any input
//! is an answer or an error, never a panic; what is valid means what it says.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;
use udptrace::{parse_addr_filter, Backend, CountField, EventKind, IpNet};

/// Few cases: these run in CI on every change, in a few seconds.
fn config() -> ProptestConfig {
    ProptestConfig::with_cases(512)
}

/// The network of `addr/prefix`, computed without the parser's library.
fn v4_network(addr: u32, prefix: u8) -> u32 {
    addr & u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn v6_network(addr: u128, prefix: u8) -> u128 {
    addr & u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

/// Text that looks like a network often enough to reach the parser's corners.
fn network_like() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC*",
        "[0-9a-fA-F:./%]{0,48}",
        "([0-9]{1,4}\\.){0,4}[0-9]{0,4}(/[0-9]{0,4})?",
        "[0-9a-f:]{0,40}(/-?[0-9]{0,4})?",
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_text_is_a_network_or_an_error(s in network_like()) {
        if let Ok(net) = parse_addr_filter(&s) {
            // Whatever parses is a network: its address has no host bits.
            prop_assert_eq!(net, net.trunc());
        }
    }

    #[test]
    fn ipv4_with_prefix_is_its_network(addr in any::<u32>(), prefix in 0u8..=32) {
        let ip = Ipv4Addr::from(addr);
        let net = parse_addr_filter(&format!("{ip}/{prefix}")).unwrap();
        let IpNet::V4(net) = net else { panic!("{net} is not IPv4") };
        prop_assert_eq!(u32::from(net.network()), v4_network(addr, prefix));
        prop_assert_eq!(net.prefix_len(), prefix);
        prop_assert!(net.contains(&ip));
    }

    #[test]
    fn ipv6_with_prefix_is_its_network(addr in any::<u128>(), prefix in 0u8..=128) {
        let ip = Ipv6Addr::from(addr);
        let net = parse_addr_filter(&format!("{ip}/{prefix}")).unwrap();
        let IpNet::V6(net) = net else { panic!("{net} is not IPv6") };
        prop_assert_eq!(u128::from(net.network()), v6_network(addr, prefix));
        prop_assert_eq!(net.prefix_len(), prefix);
        prop_assert!(net.contains(&ip));
    }

    #[test]
    fn an_address_alone_is_a_single_host(addr in any::<IpAddr>()) {
        let net = parse_addr_filter(&addr.to_string()).unwrap();
        prop_assert_eq!(net.addr(), addr);
        prop_assert_eq!(net.prefix_len(), net.max_prefix_len());
    }

    #[test]
    fn a_prefix_longer_than_the_address_is_refused(
        addr in any::<IpAddr>(),
        extra in 1u16..1000,
    ) {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let text = format!("{addr}/{}", max + extra);
        prop_assert!(parse_addr_filter(&text).is_err(), "{} parsed", text);
    }

    #[test]
    fn event_kinds_and_count_keys_parse_only_from_their_names(s in "\\PC{0,16}") {
        let kind = s.parse::<EventKind>();
        prop_assert_eq!(kind.is_ok(), EventKind::ALL.iter().any(|k| k.name() == s));
        let key = s.parse::<CountField>();
        prop_assert_eq!(key.is_ok(), CountField::ALL.iter().any(|k| k.name() == s));
    }
}

proptest! {
    #![proptest_config(config())]

    /// Whatever the input, a refusal is one line of printable text: a CLI
    /// prints it as its error line, the C API returns it as a reason.
    #[test]
    fn refusals_are_one_printable_line(
        s in prop_oneof![any::<String>(), "[a-z:./\n\t\r\x1b\x07]{0,8}"]
    ) {
        let refusals = [
            parse_addr_filter(&s).err().map(|e| e.to_string()),
            s.parse::<Backend>().err(),
            s.parse::<EventKind>().err(),
            s.parse::<CountField>().err(),
        ];
        for reason in refusals.into_iter().flatten() {
            prop_assert!(!reason.chars().any(char::is_control), "{:?}", reason);
        }
    }
}

#[test]
fn names_round_trip() {
    for kind in EventKind::ALL {
        assert_eq!(kind.name().parse::<EventKind>(), Ok(kind));
    }
    for key in CountField::ALL {
        assert_eq!(key.name().parse::<CountField>(), Ok(key));
    }
}
