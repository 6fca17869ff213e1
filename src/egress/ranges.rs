//! Which addresses are not global unicast, by the IANA special-purpose address registries
//! (RFC 6890 and its updates). IPv6 forms that carry an IPv4 address (mapped, compatible,
//! translated, NAT64, 6to4) are judged by the IPv4 address they lead to.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why an address is special; its `Display` reads after "is".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Special {
    Unspecified,
    Loopback,
    /// 169.254.0.0/16, fe80::/10 and fd00:ec2::254: where clouds serve instance metadata.
    LinkLocal,
    Private,
    /// 100.64.0.0/10, carrier-grade NAT (and Alibaba's metadata at 100.100.100.200).
    Shared,
    Documentation,
    Benchmarking,
    Multicast,
    Broadcast,
    /// Reserved, deprecated or protocol-specific: nothing a webhook or token endpoint is.
    Reserved,
}

impl Special {
    /// The short name used as a metric label.
    pub fn label(self) -> &'static str {
        match self {
            Special::Unspecified => "unspecified",
            Special::Loopback => "loopback",
            Special::LinkLocal => "link-local",
            Special::Private => "private",
            Special::Shared => "shared",
            Special::Documentation => "documentation",
            Special::Benchmarking => "benchmarking",
            Special::Multicast => "multicast",
            Special::Broadcast => "broadcast",
            Special::Reserved => "reserved",
        }
    }
}

impl std::fmt::Display for Special {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Special::Unspecified => "an unspecified address",
            Special::Loopback => "a loopback address",
            Special::LinkLocal => "a link-local address",
            Special::Private => "a private address",
            Special::Shared => "a shared (carrier-grade NAT) address",
            Special::Documentation => "a documentation address",
            Special::Benchmarking => "a benchmarking address",
            Special::Multicast => "a multicast address",
            Special::Broadcast => "the broadcast address",
            Special::Reserved => "a reserved address",
        })
    }
}

/// `None` for a global unicast address.
pub fn classify(ip: IpAddr) -> Option<Special> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

fn classify_v4(ip: Ipv4Addr) -> Option<Special> {
    use Special::*;
    const RANGES: &[([u8; 4], u32, Special)] = &[
        ([0, 0, 0, 0], 8, Unspecified),
        ([10, 0, 0, 0], 8, Private),
        ([100, 64, 0, 0], 10, Shared),
        ([127, 0, 0, 0], 8, Loopback),
        ([169, 254, 0, 0], 16, LinkLocal),
        ([172, 16, 0, 0], 12, Private),
        ([192, 0, 0, 0], 24, Reserved),
        ([192, 0, 2, 0], 24, Documentation),
        ([192, 88, 99, 0], 24, Reserved),
        ([192, 168, 0, 0], 16, Private),
        ([198, 18, 0, 0], 15, Benchmarking),
        ([198, 51, 100, 0], 24, Documentation),
        ([203, 0, 113, 0], 24, Documentation),
        ([224, 0, 0, 0], 4, Multicast),
        ([255, 255, 255, 255], 32, Broadcast),
        ([240, 0, 0, 0], 4, Reserved),
    ];
    RANGES
        .iter()
        .find(|(net, prefix, _)| in_v4(ip, *net, *prefix))
        .map(|(_, _, class)| *class)
}

fn in_v6(ip: Ipv6Addr, net: [u16; 8], prefix: u32) -> bool {
    let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
    u128::from(ip) & mask == u128::from(Ipv6Addr::from(net)) & mask
}

/// The IPv4 address in the low 32 bits.
fn low_v4(ip: Ipv6Addr) -> Ipv4Addr {
    Ipv4Addr::from(u128::from(ip) as u32)
}

fn classify_v6(ip: Ipv6Addr) -> Option<Special> {
    use Special::*;
    if ip.is_unspecified() {
        return Some(Unspecified);
    }
    if ip.is_loopback() {
        return Some(Loopback);
    }
    // Forms that lead to an IPv4 address: judged by it. Mapped and translated addresses reach
    // it directly; NAT64 through a translator, which is global only for a global address.
    for (net, prefix) in [
        ([0, 0, 0, 0, 0, 0xffff, 0, 0], 96),
        ([0, 0, 0, 0, 0xffff, 0, 0, 0], 96),
        ([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96),
    ] {
        if in_v6(ip, net, prefix) {
            return classify_v4(low_v4(ip));
        }
    }
    // IPv4-compatible (deprecated): special when its IPv4 address is, reserved otherwise.
    if in_v6(ip, [0; 8], 96) {
        return classify_v4(low_v4(ip)).or(Some(Reserved));
    }
    // 6to4 carries the IPv4 address of its relay in bits 16..48.
    if in_v6(ip, [0x2002, 0, 0, 0, 0, 0, 0, 0], 16) {
        let v4 = Ipv4Addr::from((u128::from(ip) >> 80) as u32);
        return classify_v4(v4);
    }
    if ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
        return Some(LinkLocal);
    }
    const RANGES: &[([u16; 8], u32, Special)] = &[
        ([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48, Private),
        ([0x100, 0, 0, 0, 0, 0, 0, 0], 64, Reserved),
        ([0x2001, 0, 0, 0, 0, 0, 0, 0], 23, Reserved),
        ([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32, Documentation),
        ([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20, Documentation),
        ([0x5f00, 0, 0, 0, 0, 0, 0, 0], 16, Reserved),
        ([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7, Private),
        ([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10, LinkLocal),
        ([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10, Private),
        ([0xff00, 0, 0, 0, 0, 0, 0, 0], 8, Multicast),
    ];
    if let Some((_, _, class)) = RANGES
        .iter()
        .find(|(net, prefix, _)| in_v6(ip, *net, *prefix))
    {
        return Some(*class);
    }
    // Global unicast is allocated from 2000::/3 alone.
    (!in_v6(ip, [0x2000, 0, 0, 0, 0, 0, 0, 0], 3)).then_some(Reserved)
}

#[cfg(test)]
mod tests {
    use super::Special::*;
    use super::*;

    fn class(text: &str) -> Option<Special> {
        classify(text.parse().unwrap())
    }

    #[test]
    fn ipv4_special_purpose_ranges() {
        for (ip, expected) in [
            ("0.0.0.0", Unspecified),
            ("0.1.2.3", Unspecified),
            ("10.0.0.1", Private),
            ("100.64.0.1", Shared),
            ("100.100.100.200", Shared),
            ("127.0.0.1", Loopback),
            ("127.255.255.254", Loopback),
            ("169.254.169.254", LinkLocal),
            ("172.16.0.1", Private),
            ("172.31.255.255", Private),
            ("192.0.0.170", Reserved),
            ("192.0.2.2", Documentation),
            ("192.88.99.1", Reserved),
            ("192.168.1.1", Private),
            ("198.18.0.1", Benchmarking),
            ("198.19.255.255", Benchmarking),
            ("198.51.100.7", Documentation),
            ("203.0.113.9", Documentation),
            ("224.0.0.251", Multicast),
            ("239.255.255.250", Multicast),
            ("240.0.0.1", Reserved),
            ("255.255.255.255", Broadcast),
        ] {
            assert_eq!(class(ip), Some(expected), "{ip}");
        }
        for global in [
            "1.1.1.1",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "198.20.0.1",
        ] {
            assert_eq!(class(global), None, "{global}");
        }
    }

    #[test]
    fn ipv6_special_purpose_ranges() {
        for (ip, expected) in [
            ("::", Unspecified),
            ("::1", Loopback),
            ("fe80::1", LinkLocal),
            ("fd00:ec2::254", LinkLocal),
            ("fd12:3456::1", Private),
            ("fc00::1", Private),
            ("fec0::1", Private),
            ("2001:db8::1", Documentation),
            ("3fff::1", Documentation),
            ("2001::1", Reserved),
            ("100::1", Reserved),
            ("ff02::1", Multicast),
            ("64:ff9b:1::1", Private),
            ("4000::1", Reserved),
        ] {
            assert_eq!(class(ip), Some(expected), "{ip}");
        }
        for global in [
            "2606:4700::1111",
            "2a00:1450::1",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert_eq!(class(global), None, "{global}");
        }
    }

    #[test]
    fn ipv6_forms_of_ipv4_addresses_are_judged_by_the_ipv4_address() {
        for (ip, expected) in [
            ("::ffff:127.0.0.1", Loopback),
            ("::ffff:192.0.2.2", Documentation),
            ("::ffff:169.254.169.254", LinkLocal),
            ("::ffff:0:10.1.2.3", Private),
            ("64:ff9b::a9fe:a9fe", LinkLocal),
            ("::127.0.0.1", Loopback),
            ("::8.8.8.8", Reserved),
            ("2002:7f00:1::1", Loopback),
            ("2002:a9fe:a9fe::1", LinkLocal),
        ] {
            assert_eq!(class(ip), Some(expected), "{ip}");
        }
        assert_eq!(class("::ffff:8.8.8.8"), None);
    }
}
