//! Sources with no cluster (`hookline run`): each WebhookSource of the manifests resolved to
//! the route ingestion enforces, destinations bound to the source their `sourceRef` names, and
//! the rules of API §9 checked at load — the source must admit the destination's namespace, and
//! a write key belongs to one source. All of it is one person's files, so a broken rule is an
//! error naming both sides, not a condition.

use super::ConfigError;
use super::destination::Destination;
use super::manifests::{LoadedSource, Manifests};
use crate::jetstream::names::{KeyDigest, SourceNames};
use crate::pipeline::source::{RouteSpec, SourceRoute, check_origins};
use crate::tenancy;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Every destination of `manifests`, resolved, reading the source it names.
pub fn bind(manifests: &Manifests) -> Result<Vec<Destination>, ConfigError> {
    let sources = manifests
        .sources
        .iter()
        .map(|s| Ok(((s.namespace(), s.name()), (s, route(s, manifests)?))))
        .collect::<Result<HashMap<_, _>, ConfigError>>()?;
    let mut destinations = Vec::with_capacity(manifests.destinations.len());
    // Who holds each key, in file order: the sources, then destinations' private keys.
    let mut holders: Vec<(KeyDigest, String)> = manifests
        .sources
        .iter()
        .map(|s| {
            (
                sources[&(s.namespace(), s.name())].1.digest.clone(),
                s.origin.clone(),
            )
        })
        .collect();
    for loaded in &manifests.destinations {
        let dest = Destination::resolve(loaded, &manifests.secrets)?;
        let Some((namespace, name)) = loaded.resource.spec.source_ref(loaded.namespace()) else {
            if let Some(private) = &dest.source {
                let holder = format!("{} (spec.source.writeKeySecretRef)", loaded.origin);
                holders.push((private.digest.clone(), holder));
            }
            destinations.push(dest);
            continue;
        };
        let field = "spec.source.sourceRef";
        let Some((source, route)) = sources.get(&(namespace.as_str(), name.as_str())) else {
            return Err(ConfigError::field(
                &loaded.origin,
                field,
                format!("WebhookSource {namespace}/{name} is not among the files given with -f"),
            ));
        };
        let no_labels = BTreeMap::new();
        let labels = manifests
            .namespaces
            .get(loaded.namespace())
            .unwrap_or(&no_labels);
        if !tenancy::admits(
            &namespace,
            &source.resource.spec,
            loaded.namespace(),
            labels,
        ) {
            return Err(ConfigError::field(
                &loaded.origin,
                field,
                format!(
                    "WebhookSource {namespace}/{name} ({}) does not admit destinations of namespace {:?}; widen its spec.destinations.namespaces",
                    source.origin,
                    loaded.namespace()
                ),
            ));
        }
        destinations.push(dest.reading(route.clone()));
    }
    one_source_per_key(holders)?;
    Ok(destinations)
}

fn route(source: &LoadedSource, manifests: &Manifests) -> Result<Arc<SourceRoute>, ConfigError> {
    check_origins(&source.resource.spec.allowed_origins)
        .map_err(|e| ConfigError::field(&source.origin, "spec", e))?;
    let field = "spec.writeKeySecretRef";
    let Some(r) = &source.resource.spec.write_key_secret_ref else {
        return Err(ConfigError::field(
            &source.origin,
            field,
            "required with hookline run (in a cluster the operator can generate a key; here, name a Secret among the files)",
        ));
    };
    let key = manifests
        .secrets
        .get_text(source.namespace(), r)
        .map_err(|e| ConfigError::field(&source.origin, field, e.to_string()))?;
    let names = SourceNames::new(source.namespace(), source.name());
    Ok(SourceRoute::new(RouteSpec::of_source(
        &names,
        &source.resource.spec,
        &KeyDigest::of(&key),
        String::new(),
    )))
}

/// A key value held by two sources (or a source and a destination's private key) is refused:
/// whose events would it bring?
fn one_source_per_key(holders: Vec<(KeyDigest, String)>) -> Result<(), ConfigError> {
    let mut first_holder: HashMap<KeyDigest, String> = HashMap::new();
    for (digest, holder) in holders {
        if let Some(first) = first_holder.insert(digest, holder.clone()) {
            return Err(ConfigError::Other(format!(
                "{holder} has the same write key as {first}; a write key belongs to one source: give one of them another key, or point destinations at one WebhookSource with spec.source.sourceRef"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bind_yaml(yaml: &str) -> Result<Vec<Destination>, String> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("m.yaml");
        std::fs::write(&file, yaml).unwrap();
        let manifests = Manifests::load(&[file]).map_err(|e| e.to_string())?;
        bind(&manifests).map_err(|e| e.to_string())
    }

    const KEY: &str = "apiVersion: v1\nkind: Secret\nmetadata: {name: k, namespace: shop}\nstringData: {writeKey: wk}\n";

    fn source(namespaces: &str) -> String {
        format!(
            "---\napiVersion: hookline.dev/v1alpha1\nkind: WebhookSource\nmetadata: {{name: web, namespace: shop}}\nspec:\n  writeKeySecretRef: {{name: k, key: writeKey}}\n  destinations: {{namespaces: {namespaces}}}\n"
        )
    }

    fn destination(name: &str, namespace: &str, source: &str) -> String {
        format!(
            "---\napiVersion: hookline.dev/v1alpha1\nkind: WebhookDestination\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n  endpoint: {{url: 'http://127.0.0.1:9'}}\n  source: {source}\n"
        )
    }

    #[test]
    fn destinations_share_their_sources_route() {
        let yaml = format!(
            "{KEY}{}{}{}",
            source("{from: Same}"),
            destination("a", "shop", "{sourceRef: {name: web}}"),
            destination("b", "shop", "{sourceRef: {name: web, namespace: shop}}"),
        );
        let bound = bind_yaml(&yaml).unwrap();
        let (a, b) = (
            bound[0].source.clone().unwrap(),
            bound[1].source.clone().unwrap(),
        );
        assert!(Arc::ptr_eq(&a, &b), "one rate limit for the source");
        assert_eq!(a.digest, KeyDigest::of("wk"));
        assert_eq!(a.spec.subject, "hookline.events.src.shop_web");
    }

    #[test]
    fn a_source_must_admit_the_namespace() {
        let other = destination("a", "ads", "{sourceRef: {name: web, namespace: shop}}");
        let err = bind_yaml(&format!("{KEY}{}{other}", source("{from: Same}"))).unwrap_err();
        assert!(
            err.contains("spec.source.sourceRef") && err.contains("does not admit"),
            "{err}"
        );
        let selector = "{from: Selector, selector: {matchLabels: {team: shop}}}";
        let labelled =
            "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: ads, labels: {team: shop}}\n";
        assert!(bind_yaml(&format!("{KEY}{}{other}{labelled}", source(selector))).is_ok());
        assert!(bind_yaml(&format!("{KEY}{}{other}", source(selector))).is_err());
        let missing = destination("a", "shop", "{sourceRef: {name: nope}}");
        let err = bind_yaml(&format!("{KEY}{missing}")).unwrap_err();
        assert!(
            err.contains("WebhookSource shop/nope is not among the files"),
            "{err}"
        );
    }

    #[test]
    fn a_key_belongs_to_one_source() {
        let copied = destination("a", "shop", "{writeKeySecretRef: {name: k, key: writeKey}}");
        let err = bind_yaml(&format!("{KEY}{}{copied}", source("{from: Same}"))).unwrap_err();
        assert!(err.contains("same write key"), "{err}");
        let keyless = "---\napiVersion: hookline.dev/v1alpha1\nkind: WebhookSource\nmetadata: {name: web}\nspec: {}\n";
        let err = bind_yaml(keyless).unwrap_err();
        assert!(
            err.contains("spec.writeKeySecretRef: required with hookline run"),
            "{err}"
        );
    }
}
