//! The egress guard's flags (API §11), as `run`, `worker` and `controller` take them.

use crate::egress::policy::{EgressPolicy, Refuse};
use crate::egress::{Egress, ProxyError};
use crate::metrics::{METRICS, OPERATOR_METRICS};
use ipnet::IpNet;

/// Address ranges let through whatever else the guard refuses.
#[derive(clap::Args, Debug, Clone, Default, PartialEq)]
pub struct Allowed {
    /// An address range (CIDR) the egress guard lets through although it would refuse it,
    /// e.g. an in-cluster token server's Service range; repeatable, or comma-separated
    #[arg(
        long = "egress-allow",
        value_name = "CIDR",
        env = "HOOKLINE_EGRESS_ALLOW",
        value_delimiter = ','
    )]
    pub cidrs: Vec<IpNet>,
}

/// `hookline run`: a laptop's deliveries go anywhere unless asked.
#[derive(clap::Args, Debug, Clone)]
pub struct RunEgress {
    /// Refuse deliveries and token requests to every address that is not global unicast
    /// (loopback, private, link-local, ...), except what --egress-allow names
    #[arg(long, env = "HOOKLINE_EGRESS_DENY_PRIVATE")]
    egress_deny_private: bool,
    #[command(flatten)]
    allowed: Allowed,
}

impl RunEgress {
    pub fn egress(&self) -> Result<Egress, ProxyError> {
        let policy = EgressPolicy::laptop(self.egress_deny_private, self.allowed.cidrs.clone());
        Egress::new(policy.counted(METRICS.egress_refused.clone()), None)
    }
}

/// `hookline worker`: what the operator passes from the chart's `egress.workers` values.
#[derive(clap::Args, Debug, Clone, Default, PartialEq)]
pub struct WorkerEgress {
    /// Let deliveries and token requests reach link-local addresses (cloud metadata at
    /// 169.254.169.254 among them), which a worker refuses by default
    #[arg(long, env = "HOOKLINE_EGRESS_ALLOW_LINK_LOCAL")]
    pub egress_allow_link_local: bool,
    /// Refuse every address that is not global unicast (private ranges, loopback, ...),
    /// except what --egress-allow names
    #[arg(long, env = "HOOKLINE_EGRESS_DENY_PRIVATE")]
    pub egress_deny_private: bool,
    #[command(flatten)]
    pub allowed: Allowed,
}

impl WorkerEgress {
    pub fn egress(&self) -> Result<Egress, ProxyError> {
        let refuse = Refuse {
            link_local: !self.egress_allow_link_local,
            other: self.egress_deny_private,
        };
        let policy = EgressPolicy::worker(refuse, self.allowed.cidrs.clone());
        Egress::new(policy.counted(METRICS.egress_refused.clone()), None)
    }

    /// The flags that give a worker this policy; none for the default.
    pub fn args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if self.egress_allow_link_local {
            args.push("--egress-allow-link-local".to_string());
        }
        if self.egress_deny_private {
            args.push("--egress-deny-private".to_string());
        }
        args.extend(
            self.allowed
                .cidrs
                .iter()
                .map(|net| format!("--egress-allow={net}")),
        );
        args
    }
}

/// `hookline controller`: the guard on the operator's own requests, and the workers' policy.
#[derive(clap::Args, Debug, Clone)]
pub struct OperatorEgress {
    #[command(flatten)]
    allowed: Allowed,
    /// The cluster's own Pod and Service ranges (CIDR; repeatable), refused like private ranges
    /// when they are not private already
    #[arg(
        long = "egress-deny",
        value_name = "CIDR",
        env = "HOOKLINE_EGRESS_DENY",
        value_delimiter = ','
    )]
    denied: Vec<IpNet>,
    /// Send the operator's requests (OAuth 2.0 token requests) through this proxy (default:
    /// HTTPS_PROXY; NO_PROXY is honoured); its address must pass the guard
    #[arg(long, value_name = "URL", env = "HOOKLINE_EGRESS_PROXY")]
    egress_proxy: Option<String>,
    /// Workers may reach link-local addresses (chart: egress.workers.allowLinkLocal)
    #[arg(long, env = "HOOKLINE_WORKER_EGRESS_ALLOW_LINK_LOCAL")]
    worker_egress_allow_link_local: bool,
    /// Workers refuse every address that is not global unicast, except --egress-allow
    /// (chart: egress.workers.denyPrivate)
    #[arg(long, env = "HOOKLINE_WORKER_EGRESS_DENY_PRIVATE")]
    worker_egress_deny_private: bool,
}

impl OperatorEgress {
    pub fn egress(&self) -> Result<Egress, ProxyError> {
        let policy = EgressPolicy::operator(self.allowed.cidrs.clone(), self.denied.clone());
        Egress::new(
            policy.counted(OPERATOR_METRICS.egress_refused.clone()),
            self.egress_proxy.as_deref(),
        )
    }

    /// What the workers run with: the admin's exceptions apply to them too.
    pub fn workers(&self) -> WorkerEgress {
        WorkerEgress {
            egress_allow_link_local: self.worker_egress_allow_link_local,
            egress_deny_private: self.worker_egress_deny_private,
            allowed: self.allowed.clone(),
        }
    }
}
