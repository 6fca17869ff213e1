//! Who may read a source (API.md §9), decided purely: a source admits a destination's namespace
//! (`Same | All | Selector`, as a Gateway admits routes), and a write key belongs to one source
//! — the oldest that presents it.

use crate::api::{NamespacesFrom, WebhookSourceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use std::collections::BTreeMap;

/// Whether the source in `source_namespace` lets destinations of `namespace` (with its labels)
/// read it.
pub fn admits(
    source_namespace: &str,
    source: &WebhookSourceSpec,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    match source.allowed_namespaces() {
        (NamespacesFrom::Same, _) => namespace == source_namespace,
        (NamespacesFrom::All, _) => true,
        (NamespacesFrom::Selector, Some(selector)) => selects(selector, labels),
        // The schema requires a selector with Selector; without one, nobody.
        (NamespacesFrom::Selector, None) => false,
    }
}

/// A Kubernetes label selector (`matchLabels` and `matchExpressions`, all of them) against
/// `labels`. An operator it does not know selects nothing: a grant must never widen by mistake.
pub fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let by_labels = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let by_expressions = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        let value = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    by_labels && by_expressions
}

/// Something that presents a write key: a WebhookSource, or a destination's private key.
/// Ordered as conflicts are decided: oldest first, then namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Claimant {
    /// `metadata.creationTimestamp`, in seconds since the epoch.
    pub created: i64,
    pub namespace: String,
    pub name: String,
    pub kind: ClaimantKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ClaimantKind {
    Source,
    Destination,
}

/// Of those presenting the same key, the one it belongs to: the oldest, then by
/// namespace/name (API §9), so every operator replica and restart picks the same.
pub fn owner<'a>(claimants: impl IntoIterator<Item = &'a Claimant>) -> Option<&'a Claimant> {
    claimants.into_iter().min()
}

impl Claimant {
    /// How routes carry it (`RouteSpec::rank`): sorts as claimants do.
    pub fn rank(&self) -> String {
        format!(
            "{:020} {}/{} {:?}",
            self.created, self.namespace, self.name, self.kind
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{AllowedNamespaces, SourceDestinations};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn source(from: NamespacesFrom, selector: Option<LabelSelector>) -> WebhookSourceSpec {
        WebhookSourceSpec {
            destinations: Some(SourceDestinations {
                namespaces: Some(AllowedNamespaces {
                    from: Some(from),
                    selector,
                }),
            }),
            ..Default::default()
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn same_is_the_default_and_admits_only_the_sources_namespace() {
        let default = WebhookSourceSpec::default();
        assert!(admits("shop", &default, "shop", &labels(&[])));
        assert!(!admits(
            "shop",
            &default,
            "ads",
            &labels(&[("team", "shop")])
        ));
        let all = source(NamespacesFrom::All, None);
        assert!(admits("shop", &all, "ads", &labels(&[])));
    }

    #[test]
    fn a_selector_admits_by_labels_and_expressions() {
        let selector = LabelSelector {
            match_labels: Some(labels(&[("team", "shop")])),
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "env".into(),
                operator: "NotIn".into(),
                values: Some(vec!["sandbox".into()]),
            }]),
        };
        let s = source(NamespacesFrom::Selector, Some(selector));
        assert!(admits("shop", &s, "ads", &labels(&[("team", "shop")])));
        assert!(!admits("shop", &s, "ads", &labels(&[("team", "ads")])));
        let sandbox = labels(&[("team", "shop"), ("env", "sandbox")]);
        assert!(!admits("shop", &s, "ads", &sandbox));
        assert!(
            !admits(
                "shop",
                &source(NamespacesFrom::Selector, None),
                "shop",
                &labels(&[])
            ),
            "Selector without a selector admits nobody, not everybody"
        );
        let unknown = LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "team".into(),
                operator: "Matches".into(),
                values: None,
            }]),
            ..Default::default()
        };
        assert!(!selects(&unknown, &labels(&[("team", "x")])));
        assert!(selects(&LabelSelector::default(), &labels(&[])));
    }

    #[test]
    fn the_oldest_claimant_owns_the_key_then_namespace_and_name() {
        let c = |created: i64, ns: &str, name: &str, kind| Claimant {
            created,
            namespace: ns.into(),
            name: name.into(),
            kind,
        };
        let old = c(1_700_000_000, "z", "z", ClaimantKind::Destination);
        let new = c(1_700_000_001, "a", "a", ClaimantKind::Source);
        let tie = c(1_700_000_000, "y", "z", ClaimantKind::Source);
        assert_eq!(owner([&new, &old]), Some(&old));
        assert_eq!(owner([&old, &new, &tie]), Some(&tie));
    }
}
