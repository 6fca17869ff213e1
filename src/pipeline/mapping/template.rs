//! Text directives: `@template` placeholders, `@replace`'s literal patterns and `@liquid`.

use super::MappingError;
use super::validate::{MAX_LIQUID_LENGTH, MAX_PATTERN_LENGTH};
use crate::pipeline::jsvalue::{self, to_js_string};
use regex::{Captures, Regex};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

static TRIPLE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\{\{\{([^}]+)\}\}\}").expect("valid regex"));
static DOUBLE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\{\{([^}]+)\}\}").expect("valid regex"));

/// `@template`: `{{{path}}}`, then `{{path}}`, each replaced by the value as it is (`String(v)`;
/// missing and null render as ''). Current mapping-kit no longer HTML-escapes `{{path}}`; the two
/// passes still run in this order, so a `{{{…}}}` value that contains `{{…}}` is filled in too.
pub fn render_placeholders(template: &str, data: &Value) -> String {
    let placeholder = |caps: &Captures| match jsvalue::get(Some(data), caps[1].trim()).as_deref() {
        None | Some(Value::Null) => String::new(),
        Some(v) => to_js_string(v),
    };
    let unescaped = TRIPLE.replace_all(template, placeholder);
    DOUBLE.replace_all(&unescaped, placeholder).into_owned()
}

/// The paths [`render_placeholders`] looks up in `template`; `None` when a `{{{…}}}` value,
/// itself filled in by the second pass, could bring in placeholders of its own.
pub fn placeholder_paths(template: &str) -> Option<Vec<&str>> {
    if TRIPLE.is_match(template) {
        return None;
    }
    Some(
        DOUBLE
            .captures_iter(template)
            .map(|caps| {
                caps.get(1)
                    .expect("the regex has one group")
                    .as_str()
                    .trim()
            })
            .collect(),
    )
}

/// `@replace`: the pattern is a literal (never a regex); the replacement keeps JS's `$&`, `$$`,
/// `` $` `` and `$'` substitutions. Both are limited to ten characters here too, because
/// `pattern2`/`replacement2` are only checked when they are used.
pub fn replace_literal(
    subject: &str,
    pattern: &str,
    replacement: &str,
    ignore_case: bool,
    global: bool,
) -> Result<String, MappingError> {
    for (name, text) in [("pattern", pattern), ("replacement", replacement)] {
        if text.encode_utf16().count() > MAX_PATTERN_LENGTH {
            return Err(MappingError(format!(
                "@replace requires a \"{name}\" less than {MAX_PATTERN_LENGTH} characters"
            )));
        }
    }
    let re = regex::RegexBuilder::new(&regex::escape(pattern))
        .case_insensitive(ignore_case)
        .build()
        .map_err(|e| MappingError(format!("@replace: {e}")))?;
    let substitute = |caps: &Captures| {
        let m = caps.get(0).expect("group 0 always exists");
        let mut out = String::new();
        let mut chars = replacement.chars().peekable();
        while let Some(c) = chars.next() {
            if c != '$' {
                out.push(c);
                continue;
            }
            match chars.peek() {
                Some('$') => out.push('$'),
                Some('&') => out.push_str(m.as_str()),
                Some('`') => out.push_str(&subject[..m.start()]),
                Some('\'') => out.push_str(&subject[m.end()..]),
                _ => {
                    out.push('$');
                    continue;
                }
            }
            chars.next();
        }
        out
    };
    Ok(if global {
        re.replace_all(subject, substitute)
    } else {
        re.replace(subject, substitute)
    }
    .into_owned())
}

const DISABLED_TAGS: &[&str] = &["case", "for", "include", "layout", "render", "tablerow"];
const DISABLED_FILTERS: &[&str] = &[
    "array_to_sentence_string",
    "concat",
    "find",
    "find_exp",
    "find_index",
    "find_index_exp",
    "group_by",
    "group_by_exp",
    "has",
    "has_exp",
    "map",
    "newline_to_br",
    "reject",
    "reject_exp",
    "reverse",
    "sort",
    "sort_natural",
    "uniq",
    "where_exp",
    "type",
];

static TAG: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\{%-?\s*([a-z_]+)").expect("valid regex"));
static FILTER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\|\s*([a-z_]+)").expect("valid regex"));
/// The markup of a template (`{{ … }}`, `{% … %}`), its quoted strings, and its numbers.
static MARKUP: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?s)\{\{.*?\}\}|\{%.*?%\}").expect("valid regex"));
static QUOTED: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#"'[^']*'|"[^"]*""#).expect("valid regex"));
static NUMBER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b[0-9][0-9.]*").expect("valid regex"));
static PARSER: LazyLock<liquid::Parser> = LazyLock::new(|| {
    liquid::ParserBuilder::with_stdlib()
        .build()
        .expect("the standard Liquid library builds")
});

/// `@liquid` templates, parsed once when the mapping is compiled. Loops and includes are disabled
/// as in Segment, so rendering time is bounded by the template's (≤ 1000 character) length.
#[derive(Clone, Default)]
pub struct LiquidTemplates {
    parsed: HashMap<String, Arc<liquid::Template>>,
}

impl std::fmt::Debug for LiquidTemplates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiquidTemplates")
            .field("count", &self.parsed.len())
            .finish()
    }
}

impl LiquidTemplates {
    pub fn compile(mapping: &Value, errors: &mut Vec<String>) -> Self {
        let mut templates = LiquidTemplates::default();
        templates.collect(mapping, &mut Vec::new(), errors);
        templates
    }

    fn collect(&mut self, value: &Value, path: &mut Vec<String>, errors: &mut Vec<String>) {
        match value {
            Value::Object(obj) => {
                for (key, child) in obj {
                    path.push(key.clone());
                    match (key.as_str(), child) {
                        ("@liquid", Value::String(text)) => match parse(text) {
                            Ok(t) => {
                                self.parsed.insert(text.clone(), Arc::new(t));
                            }
                            Err(e) => errors.push(format!("/{} {}.", path.join("/"), e.0)),
                        },
                        _ => self.collect(child, path, errors),
                    }
                    path.pop();
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    path.push(i.to_string());
                    self.collect(child, path, errors);
                    path.pop();
                }
            }
            _ => {}
        }
    }

    pub fn render(&self, text: &str, payload: &Value) -> Result<String, MappingError> {
        if text.is_empty() {
            return Ok(String::new());
        }
        let dynamic;
        let template = match self.parsed.get(text) {
            Some(t) => t.as_ref(),
            None => {
                dynamic = parse(text)?;
                &dynamic
            }
        };
        let globals = match payload {
            Value::Object(_) => liquid::model::to_object(payload)
                .map_err(|e| MappingError(format!("@liquid: {e}")))?,
            _ => liquid::Object::new(),
        };
        template
            .render(&globals)
            .map_err(|e| MappingError(format!("@liquid: {e}")))
    }
}

fn parse(text: &str) -> Result<liquid::Template, MappingError> {
    if text.encode_utf16().count() > MAX_LIQUID_LENGTH {
        return Err(MappingError(format!(
            "liquid template values are limited to {MAX_LIQUID_LENGTH} characters"
        )));
    }
    if let Some(tag) = TAG
        .captures_iter(text)
        .map(|c| c[1].to_string())
        .find(|t| DISABLED_TAGS.contains(&t.as_str()))
    {
        return Err(MappingError(format!("tag \"{tag}\" is disabled")));
    }
    if let Some(f) = FILTER
        .captures_iter(text)
        .map(|c| c[1].to_string())
        .find(|f| DISABLED_FILTERS.contains(&f.as_str()))
    {
        return Err(MappingError(format!("filter \"{f}\" is disabled")));
    }
    // The liquid crate panics on an integer literal too large for i64 (found by fuzzing):
    // refused here first, and any other panic of its parser is caught as a backstop.
    if let Some(number) = oversized_integer(text) {
        return Err(MappingError(format!(
            "@liquid: the number {number} is too large (integers must fit 64 bits)"
        )));
    }
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| PARSER.parse(text))) {
        Ok(parsed) => parsed.map_err(|e| MappingError(format!("@liquid: {e}"))),
        Err(_) => Err(MappingError(
            "@liquid: the template cannot be parsed (a number too large?)".into(),
        )),
    }
}

/// An integer literal in the template's markup that does not fit an i64.
fn oversized_integer(text: &str) -> Option<String> {
    MARKUP.find_iter(text).find_map(|markup| {
        let unquoted = QUOTED.replace_all(markup.as_str(), "");
        NUMBER
            .find_iter(&unquoted)
            .map(|n| n.as_str())
            .find(|n| !n.contains('.') && n.parse::<i64>().is_err())
            .map(str::to_string)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_template_that_breaks_the_liquid_parser_is_refused() {
        // Found by fuzzing (fuzz/seeds/mapping/liquid-integer-overflow).
        let err = parse(&format!(
            "{{% if {} > 0 %}}yes{{% endif %}}",
            "9".repeat(40)
        ))
        .err()
        .expect("refused");
        assert!(err.0.contains("too large"), "{err:?}");
        // Long digits in quotes, in identifiers and in plain text are not numbers of the markup.
        assert!(parse("{{ \"12345678901234567890123\" }} id 12345678901234567890123").is_ok());
        assert!(parse("{% if 9223372036854775807 > 1.5 %}y{% endif %}").is_ok());
    }

    #[test]
    fn placeholders_insert_values_as_they_are() {
        let data = json!({"a": "<b>&'", "n": 2, "t": "{{n}}"});
        assert_eq!(
            render_placeholders("{{a}}|{{{a}}}|{{ n }}|{{x}}|{{{t}}}", &data),
            "<b>&'|<b>&'|2||2"
        );
    }

    #[test]
    fn replace_is_literal_and_keeps_js_substitutions() {
        assert_eq!(
            replace_literal("a.b.c", ".", "[$&]", false, true).unwrap(),
            "a[.]b[.]c"
        );
        assert_eq!(
            replace_literal("AaA", "a", "x", true, false).unwrap(),
            "xaA"
        );
    }

    #[test]
    fn disabled_liquid_tags_are_rejected() {
        assert!(
            parse("{% for x in y %}{% endfor %}")
                .err()
                .unwrap()
                .0
                .contains("\"for\" is disabled")
        );
        assert!(
            parse("{{ a | sort }}")
                .err()
                .unwrap()
                .0
                .contains("\"sort\" is disabled")
        );
    }
}
