//! What a process may connect to: the addresses its guard refuses, and the exceptions the
//! cluster admin made. Decided on the address, never on a URL's text.

use super::ranges::{Special, classify};
use ipnet::IpNet;
use prometheus::IntCounterVec;
use std::net::IpAddr;

/// Which addresses are refused before the admin's exceptions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Refuse {
    /// Cloud metadata and the rest of link-local: workers' default.
    pub link_local: bool,
    /// Every other address that is not global unicast, and the cluster's own ranges: the
    /// operator's default, and workers' when the admin denies private ranges.
    pub other: bool,
}

impl Refuse {
    pub const ALL: Refuse = Refuse {
        link_local: true,
        other: true,
    };
}

/// Why an address was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    Special(Special),
    /// One of the cluster's own Pod or Service CIDRs (`--egress-deny`).
    Cluster(IpNet),
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rule::Special(s) => s.fmt(f),
            Rule::Cluster(net) => write!(f, "an address of the cluster's own network {net}"),
        }
    }
}

impl Rule {
    fn label(&self) -> &'static str {
        match self {
            Rule::Special(s) => s.label(),
            Rule::Cluster(_) => "cluster",
        }
    }
}

/// A connection the guard refused: which address, which rule, and the setting that allows it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{address} is {rule}, which the egress guard refuses; {remedy}")]
pub struct Refused {
    pub address: IpAddr,
    pub rule: Rule,
    pub remedy: &'static str,
}

#[derive(Debug, Clone)]
pub struct EgressPolicy {
    refuse: Refuse,
    /// The admin's exceptions; they win over every refusal.
    allowed: Vec<IpNet>,
    /// The cluster's own ranges, refused unless allowed (with `AllButGlobal`).
    denied: Vec<IpNet>,
    /// What a message tells a person to change to allow a refused address.
    remedies: Remedies,
    refusals: Option<IntCounterVec>,
}

/// The setting named in a refusal, by the rule that refused.
#[derive(Debug, Clone, Copy)]
pub struct Remedies {
    pub link_local: &'static str,
    pub other: &'static str,
}

impl EgressPolicy {
    pub fn new(
        refuse: Refuse,
        allowed: Vec<IpNet>,
        denied: Vec<IpNet>,
        remedies: Remedies,
    ) -> Self {
        EgressPolicy {
            refuse,
            allowed,
            denied,
            remedies,
            refusals: None,
        }
    }

    /// Refusals are counted in `counter` (by rule), in the process's own registry.
    pub fn counted(mut self, counter: IntCounterVec) -> Self {
        self.refusals = Some(counter);
        self
    }

    /// The operator: nothing but global unicast, except what the admin allowed.
    pub fn operator(allowed: Vec<IpNet>, denied: Vec<IpNet>) -> Self {
        let remedy = "the cluster admin can allow it with egress.allowedCIDRs";
        let remedies = Remedies {
            link_local: remedy,
            other: remedy,
        };
        EgressPolicy::new(Refuse::ALL, allowed, denied, remedies)
    }

    /// A cluster worker: link-local refused unless allowed; private ranges only when denied.
    pub fn worker(refuse: Refuse, allowed: Vec<IpNet>) -> Self {
        let remedies = Remedies {
            link_local: "the cluster admin can allow it with egress.workers.allowLinkLocal",
            other: "the cluster admin can allow it with egress.allowedCIDRs",
        };
        EgressPolicy::new(refuse, allowed, Vec::new(), remedies)
    }

    /// `hookline run`: nothing refused unless asked (`--egress-deny-private`).
    pub fn laptop(deny_private: bool, allowed: Vec<IpNet>) -> Self {
        let remedy = "allow it with --egress-allow CIDR";
        let remedies = Remedies {
            link_local: remedy,
            other: remedy,
        };
        let refuse = if deny_private {
            Refuse::ALL
        } else {
            Refuse::default()
        };
        EgressPolicy::new(refuse, allowed, Vec::new(), remedies)
    }

    /// Whether a connection to `address` may be made.
    pub fn vet(&self, address: IpAddr) -> Result<(), Refused> {
        let address = canonical(address);
        if self.allowed.iter().any(|net| net.contains(&address)) {
            return Ok(());
        }
        let rule = match classify(address) {
            Some(Special::LinkLocal) => self
                .refuse
                .link_local
                .then_some(Rule::Special(Special::LinkLocal)),
            Some(special) => self.refuse.other.then_some(Rule::Special(special)),
            None if self.refuse.other => self
                .denied
                .iter()
                .find(|net| net.contains(&address))
                .map(|net| Rule::Cluster(*net)),
            None => None,
        };
        let Some(rule) = rule else {
            return Ok(());
        };
        if let Some(counter) = &self.refusals {
            counter.with_label_values(&[rule.label()]).inc();
        }
        let remedy = match rule {
            Rule::Special(Special::LinkLocal) => self.remedies.link_local,
            _ => self.remedies.other,
        };
        Err(Refused {
            address,
            rule,
            remedy,
        })
    }

    /// A host written as an address (which never reaches a resolver) vetted as that address;
    /// a name passes here, to be vetted as what it resolves to.
    pub fn vet_host(&self, host: &str) -> Result<(), Refused> {
        literal(host).map_or(Ok(()), |address| self.vet(address))
    }
}

/// An IPv4-mapped IPv6 address connects to its IPv4 address, so the admin's IPv4 exceptions
/// and the cluster's IPv4 ranges apply to it as written.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// `[::1]` as a URL or URI writes it, or a bare address; `None` for a name.
fn literal(host: &str) -> Option<IpAddr> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const REMEDIES: Remedies = Remedies {
        link_local: "allow it with egress.workers.allowLinkLocal",
        other: "allow it with egress.allowedCIDRs",
    };

    const LINK_LOCAL: Refuse = Refuse {
        link_local: true,
        other: false,
    };

    fn policy(refuse: Refuse, allowed: &[&str], denied: &[&str]) -> EgressPolicy {
        let nets = |list: &[&str]| list.iter().map(|n| n.parse().unwrap()).collect();
        EgressPolicy::new(refuse, nets(allowed), nets(denied), REMEDIES)
    }

    fn refused(p: &EgressPolicy, ip: &str) -> Option<Rule> {
        p.vet(ip.parse().unwrap()).err().map(|r| r.rule)
    }

    #[test]
    fn all_but_global_refuses_every_special_address_and_the_cluster_ranges() {
        let p = policy(Refuse::ALL, &[], &["203.0.0.0/16"]);
        for ip in [
            "127.0.0.1",
            "169.254.169.254",
            "10.1.2.3",
            "::ffff:192.0.2.2",
            "fd00:ec2::254",
            "0.0.0.0",
            "::",
        ] {
            assert!(refused(&p, ip).is_some(), "{ip}");
        }
        assert_eq!(
            refused(&p, "203.0.9.9"),
            Some(Rule::Cluster("203.0.0.0/16".parse().unwrap()))
        );
        assert_eq!(refused(&p, "8.8.8.8"), None);
    }

    #[test]
    fn the_admins_exceptions_win_also_for_mapped_addresses() {
        let p = policy(Refuse::ALL, &["10.96.0.0/12"], &["10.96.0.0/12"]);
        assert_eq!(refused(&p, "10.96.4.5"), None);
        assert_eq!(refused(&p, "::ffff:10.96.4.5"), None);
        assert!(refused(&p, "10.0.0.1").is_some());
        let err = p.vet("10.0.0.1".parse().unwrap()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "10.0.0.1 is a private address, which the egress guard refuses; allow it with egress.allowedCIDRs"
        );
    }

    #[test]
    fn link_local_refuses_cloud_metadata_only() {
        let p = policy(LINK_LOCAL, &[], &[]);
        for ip in [
            "169.254.169.254",
            "::ffff:169.254.169.254",
            "fe80::1",
            "fd00:ec2::254",
        ] {
            assert_eq!(
                refused(&p, ip),
                Some(Rule::Special(Special::LinkLocal)),
                "{ip}"
            );
        }
        for ip in ["127.0.0.1", "10.0.0.1", "8.8.8.8"] {
            assert_eq!(refused(&p, ip), None, "{ip}");
        }
        assert_eq!(
            p.vet("169.254.169.254".parse().unwrap())
                .unwrap_err()
                .remedy,
            "allow it with egress.workers.allowLinkLocal"
        );
    }

    #[test]
    fn the_laptop_refuses_nothing_unless_asked() {
        let p = EgressPolicy::laptop(false, Vec::new());
        assert_eq!(refused(&p, "169.254.169.254"), None);
        assert_eq!(refused(&p, "127.0.0.1"), None);
        let p = EgressPolicy::laptop(true, vec!["127.0.0.0/8".parse().unwrap()]);
        assert_eq!(refused(&p, "127.0.0.1"), None);
        assert!(refused(&p, "192.168.1.1").is_some());
        assert!(refused(&p, "169.254.169.254").is_some());
    }

    #[test]
    fn a_worker_allowed_link_local_but_denied_private_keeps_link_local() {
        let refuse = Refuse {
            link_local: false,
            other: true,
        };
        let p = EgressPolicy::worker(refuse, Vec::new());
        assert_eq!(refused(&p, "169.254.169.254"), None);
        assert!(refused(&p, "10.0.0.1").is_some());
    }

    #[test]
    fn literal_hosts_are_read_as_addresses() {
        assert_eq!(
            literal("[::ffff:192.0.2.2]"),
            Some("::ffff:192.0.2.2".parse().unwrap())
        );
        assert_eq!(literal("127.0.0.1"), Some("127.0.0.1".parse().unwrap()));
        assert_eq!(literal("auth.example.com"), None);
    }
}
