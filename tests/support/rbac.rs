//! The chart's RBAC rules (charts/hookline/files/*-rules.yaml) against the calls a test saw the
//! in-process API server answer: every call has a rule, and every rule is used.
#![allow(dead_code)]

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRule {
    api_groups: Vec<String>,
    resources: Vec<String>,
    verbs: Vec<String>,
}

pub fn chart_rules(file: &str) -> Vec<PolicyRule> {
    let path = format!(
        "{}/charts/hookline/files/{file}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_saphyr::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// `(apiGroup, resource, verb)` of a recorded call such as `patch apps/v1/deployments`.
pub fn permission(call: &str) -> (String, String, String) {
    let call = call.trim_end_matches(" (metadata)");
    let (verb, path) = call.split_once(' ').unwrap();
    let parts: Vec<&str> = path.split('/').collect();
    // The core group's collections are `v1/...`, the others' `group/version/...`.
    let (group, rest) = match parts.as_slice() {
        [version, rest @ ..] if version.starts_with('v') && !version.contains('.') => ("", rest),
        [group, _version, rest @ ..] => (*group, rest),
        _ => panic!("unexpected call {call}"),
    };
    (group.to_string(), rest.join("/"), verb.to_string())
}

/// Every call has a rule in `files`, and every rule is used.
pub fn assert_rules_cover_exactly(operator_calls: &[String], files: &[&str]) {
    assert_rules_cover(operator_calls, files, 0);
}

/// Every call has a rule in `files`, and every rule in `files[exact_from..]` is used.
pub fn assert_rules_cover(operator_calls: &[String], files: &[&str], exact_from: usize) {
    let rules: Vec<_> = files.iter().flat_map(|f| chart_rules(f)).collect();
    let checked: Vec<_> = files[exact_from..]
        .iter()
        .flat_map(|f| chart_rules(f))
        .collect();
    let allowed = |(group, resource, verb): &(String, String, String)| {
        rules.iter().any(|r| {
            r.api_groups.contains(group) && r.resources.contains(resource) && r.verbs.contains(verb)
        })
    };
    let used: std::collections::BTreeSet<_> =
        operator_calls.iter().map(|c| permission(c)).collect();
    let missing: Vec<_> = used.iter().filter(|p| !allowed(p)).collect();
    assert!(
        missing.is_empty(),
        "calls without an RBAC rule: {missing:?}"
    );
    let granted: Vec<(String, String, String)> = checked
        .iter()
        .flat_map(|r| {
            r.api_groups.iter().flat_map(move |g| {
                r.resources.iter().flat_map(move |res| {
                    r.verbs
                        .iter()
                        .map(move |v| (g.clone(), res.clone(), v.clone()))
                })
            })
        })
        .collect();
    assert!(
        granted
            .iter()
            .all(|(g, r, v)| g != "*" && r != "*" && v != "*")
    );
    let unused: Vec<_> = granted.iter().filter(|p| !used.contains(*p)).collect();
    assert!(
        unused.is_empty(),
        "RBAC rules nothing uses: {unused:?}; used: {used:?}"
    );
}
