//! `spec.subscription`: Segment's destination trigger language (FQL), with real precedence
//! (`not` > `and` > `or`), nested parentheses, and errors that point at the offending text.

use super::jsvalue;
use serde_json::Value;

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("subscription {source_text:?}: {message} at column {column}")]
pub struct SubscriptionError {
    source_text: String,
    message: String,
    column: usize,
}

/// A parsed subscription; matching an event is a pure function of the event.
#[derive(Debug, Clone, PartialEq)]
pub struct Subscription {
    root: Expr,
}

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    All,
    Or(Box<Expr>, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Compare(Field, Check),
    /// `contains` / `match`; `negated` comes from a `!`/`not` written directly before the call and,
    /// as in Segment, still requires the field to be a string.
    Text {
        field: Field,
        op: TextOp,
        needle: String,
        negated: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum CompareOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, PartialEq)]
enum TextOp {
    Contains,
    StartsWith,
    EndsWith,
}

#[derive(Debug, Clone, PartialEq)]
enum Literal {
    String(String),
    Number(f64),
    Bool(bool),
    Null,
}

impl Literal {
    /// JavaScript's `String(value)` of the literal (`null` is the text "null").
    fn js_string(&self) -> String {
        match self {
            Literal::String(s) => s.clone(),
            Literal::Number(n) => jsvalue::to_js_string(&Value::from(*n)),
            Literal::Bool(b) => b.to_string(),
            Literal::Null => "null".into(),
        }
    }
}

/// One comparison as Segment's destination-subscriptions evaluates it: which operator a written
/// `field op literal` becomes depends on the field and the literal (`!= null` is `exists` only
/// for `name`, `userId` and paths; `= 3` is `number_equals` only for paths, and so on).
#[derive(Debug, Clone, PartialEq)]
enum Check {
    /// `actual === String(expected)`.
    Equals(String),
    /// `actual !== String(expected)`: a missing field matches.
    NotEquals(String),
    /// `<`, `<=`, `>`, `>=`, `number_equals`, `number_not_equals`: only a JSON number matches.
    Number(CompareOp, f64),
    Exists,
    NotExists,
    IsTrue,
    IsFalse,
}

impl Check {
    fn new(field: &Field, op: CompareOp, literal: &Literal) -> Check {
        let path = matches!(field, Field::Path(..));
        let user_id = field == &Field::TopLevel("userId");
        let exists_checks = path || user_id || field == &Field::TopLevel("name");
        match (op, literal) {
            (CompareOp::Ne, Literal::Null) if exists_checks => Check::Exists,
            (CompareOp::Eq, Literal::Null) if exists_checks => Check::NotExists,
            (CompareOp::Eq, Literal::Bool(true)) if path || user_id => Check::IsTrue,
            (CompareOp::Eq, Literal::Bool(false)) if path || user_id => Check::IsFalse,
            (CompareOp::Eq | CompareOp::Ne, Literal::Number(n)) if path => Check::Number(op, *n),
            (CompareOp::Eq, _) => Check::Equals(literal.js_string()),
            (CompareOp::Ne, _) => Check::NotEquals(literal.js_string()),
            // Paths keep the literal's type (`Number(true)` is 1); the other fields compare with
            // `Number(String(literal))`.
            (_, Literal::Bool(b)) if path => Check::Number(op, f64::from(u8::from(*b))),
            (_, _) => Check::Number(op, js_number(&literal.js_string())),
        }
    }

    fn matches(&self, actual: Option<&Value>) -> bool {
        match self {
            Check::Equals(s) => matches!(actual, Some(Value::String(a)) if a == s),
            Check::NotEquals(s) => !matches!(actual, Some(Value::String(a)) if a == s),
            Check::Number(op, n) => actual.and_then(Value::as_f64).is_some_and(|a| match op {
                CompareOp::Eq => a == *n,
                CompareOp::Ne => a != *n,
                CompareOp::Lt => a < *n,
                CompareOp::Le => a <= *n,
                CompareOp::Gt => a > *n,
                CompareOp::Ge => a >= *n,
            }),
            Check::Exists => !matches!(actual, None | Some(Value::Null)),
            Check::NotExists => matches!(actual, None | Some(Value::Null)),
            Check::IsTrue => actual == Some(&Value::Bool(true)),
            Check::IsFalse => actual == Some(&Value::Bool(false)),
        }
    }
}

/// JavaScript's `Number(text)`: surrounding whitespace ignored, '' is 0, anything else that is
/// not a decimal number is NaN (which no comparison matches).
fn js_number(text: &str) -> f64 {
    let t = text.trim();
    if t.is_empty() {
        return 0.0;
    }
    let finite_syntax = t
        .trim_start_matches(['+', '-'])
        .starts_with(|c: char| c.is_ascii_digit() || c == '.');
    if finite_syntax {
        t.parse().unwrap_or(f64::NAN)
    } else {
        f64::NAN
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Field {
    TopLevel(&'static str),
    /// `properties.x`, `traits.x`, `context.x`: a path under that object of the event.
    Path(&'static str, String),
}

impl Subscription {
    pub fn all() -> Self {
        Subscription { root: Expr::All }
    }

    pub fn parse(text: &str) -> Result<Self, SubscriptionError> {
        let tokens = lex(text)?;
        let mut parser = Parser {
            text,
            tokens,
            pos: 0,
        };
        let root = parser.or_expr()?;
        if let Some(tok) = parser.peek() {
            let err = match tok.kind {
                TokenKind::RParen => "unbalanced ')'".to_string(),
                _ => format!(
                    "unexpected {} after a complete expression",
                    tok.describe(text)
                ),
            };
            return Err(parser.error_at(tok.start, err));
        }
        Ok(Subscription { root })
    }

    pub fn matches(&self, event: &Value) -> bool {
        self.root.eval(event)
    }

    /// The paths into an event (keys from the event down) that matching looks at.
    pub fn paths(&self) -> Vec<Vec<String>> {
        let mut paths = Vec::new();
        self.root.paths(&mut paths);
        paths
    }
}

impl Expr {
    fn paths(&self, out: &mut Vec<Vec<String>>) {
        match self {
            Expr::All => {}
            Expr::Or(a, b) | Expr::And(a, b) => {
                a.paths(out);
                b.paths(out);
            }
            Expr::Not(e) => e.paths(out),
            Expr::Compare(field, _) | Expr::Text { field, .. } => out.push(match field {
                Field::TopLevel(name) => vec![name.to_string()],
                Field::Path(base, path) => std::iter::once(*base)
                    .chain(jsvalue::split_keys(path))
                    .map(String::from)
                    .collect(),
            }),
        }
    }

    fn eval(&self, event: &Value) -> bool {
        match self {
            Expr::All => true,
            Expr::Or(a, b) => a.eval(event) || b.eval(event),
            Expr::And(a, b) => a.eval(event) && b.eval(event),
            Expr::Not(e) => !e.eval(event),
            Expr::Compare(field, check) => check.matches(field.lookup(event).as_deref()),
            Expr::Text {
                field,
                op,
                needle,
                negated,
            } => match field.lookup(event).as_deref() {
                Some(Value::String(s)) => {
                    let hit = match op {
                        TextOp::Contains => s.contains(needle.as_str()),
                        TextOp::StartsWith => s.starts_with(needle.as_str()),
                        TextOp::EndsWith => s.ends_with(needle.as_str()),
                    };
                    hit != *negated
                }
                _ => false,
            },
        }
    }
}

impl Field {
    fn lookup<'a>(&self, event: &'a Value) -> Option<std::borrow::Cow<'a, Value>> {
        match self {
            Field::TopLevel(name) => jsvalue::member(event, name).map(std::borrow::Cow::Borrowed),
            Field::Path(base, path) => jsvalue::get_split(jsvalue::member(event, base), path),
        }
    }

    fn parse(path: &str) -> Option<Field> {
        const TOP: [&str; 4] = ["type", "event", "name", "userId"];
        if let Some(top) = TOP.iter().find(|t| **t == path) {
            return Some(Field::TopLevel(top));
        }
        let (head, rest) = path.split_once('.')?;
        if rest.is_empty() {
            return None;
        }
        const BASES: [&str; 3] = ["properties", "traits", "context"];
        let base = BASES.iter().find(|b| **b == head)?;
        Some(Field::Path(base, rest.to_string()))
    }
}

// ---- lexer ----

#[derive(Debug, Clone, PartialEq)]
enum TokenKind {
    Ident(String),
    Str(String),
    Number(f64),
    Op(CompareOp),
    LParen,
    RParen,
    Comma,
    Bang,
    AndAnd,
    OrOr,
}

#[derive(Debug, Clone)]
struct Token {
    kind: TokenKind,
    start: usize,
    end: usize,
}

impl Token {
    fn describe(&self, text: &str) -> String {
        format!("'{}'", &text[self.start..self.end])
    }
}

fn lex(text: &str) -> Result<Vec<Token>, SubscriptionError> {
    let bytes = text.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    let err = |at: usize, message: String| SubscriptionError {
        source_text: text.to_string(),
        message,
        column: text[..at].chars().count() + 1,
    };
    while i < bytes.len() {
        let c = bytes[i];
        let start = i;
        let two = |s: &str| text[i..].starts_with(s);
        let kind = match c {
            b' ' | b'\t' | b'\n' | b'\r' => {
                i += 1;
                continue;
            }
            b'(' => TokenKind::LParen,
            b')' => TokenKind::RParen,
            b',' => TokenKind::Comma,
            _ if two("!=") => TokenKind::Op(CompareOp::Ne),
            _ if two("<=") => TokenKind::Op(CompareOp::Le),
            _ if two(">=") => TokenKind::Op(CompareOp::Ge),
            _ if two("&&") => TokenKind::AndAnd,
            _ if two("||") => TokenKind::OrOr,
            _ if two("==") => TokenKind::Op(CompareOp::Eq),
            b'!' => TokenKind::Bang,
            b'=' => TokenKind::Op(CompareOp::Eq),
            b'<' => TokenKind::Op(CompareOp::Lt),
            b'>' => TokenKind::Op(CompareOp::Gt),
            b'"' | b'\'' => {
                let (s, next) =
                    lex_string(text, i).ok_or_else(|| err(i, "unterminated string".into()))?;
                tokens.push(Token {
                    kind: TokenKind::Str(s),
                    start,
                    end: next,
                });
                i = next;
                continue;
            }
            b'-' | b'0'..=b'9' => {
                let mut j = i + 1;
                while j < bytes.len()
                    && (bytes[j].is_ascii_digit() || matches!(bytes[j], b'.' | b'e' | b'E'))
                {
                    j += 1;
                }
                let n: f64 = text[i..j]
                    .parse()
                    .map_err(|_| err(i, format!("invalid number '{}'", &text[i..j])))?;
                tokens.push(Token {
                    kind: TokenKind::Number(n),
                    start,
                    end: j,
                });
                i = j;
                continue;
            }
            c if c.is_ascii_alphabetic() || c == b'_' || c == b'$' => {
                let mut j = i + 1;
                while j < bytes.len()
                    && (bytes[j].is_ascii_alphanumeric()
                        || matches!(bytes[j], b'_' | b'.' | b'$' | b'-'))
                {
                    j += 1;
                }
                tokens.push(Token {
                    kind: TokenKind::Ident(text[i..j].to_string()),
                    start,
                    end: j,
                });
                i = j;
                continue;
            }
            _ => {
                let ch = text[i..].chars().next().unwrap_or('?');
                return Err(err(i, format!("unexpected character '{ch}'")));
            }
        };
        let len = match kind {
            TokenKind::Op(CompareOp::Ne | CompareOp::Le | CompareOp::Ge)
            | TokenKind::AndAnd
            | TokenKind::OrOr => 2,
            TokenKind::Op(CompareOp::Eq) if two("==") => 2,
            _ => 1,
        };
        i += len;
        tokens.push(Token {
            kind,
            start,
            end: i,
        });
    }
    Ok(tokens)
}

fn lex_string(text: &str, start: usize) -> Option<(String, usize)> {
    let quote = text.as_bytes()[start] as char;
    let mut out = String::new();
    let mut chars = text[start + 1..].char_indices();
    while let Some((off, c)) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?.1),
            c if c == quote => return Some((out, start + 1 + off + 1)),
            c => out.push(c),
        }
    }
    None
}

// ---- parser ----

struct Parser<'a> {
    text: &'a str,
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn error_at(&self, at: usize, message: String) -> SubscriptionError {
        SubscriptionError {
            source_text: self.text.to_string(),
            message,
            column: self.text[..at].chars().count() + 1,
        }
    }

    fn end_error(&self, expected: &str) -> SubscriptionError {
        self.error_at(
            self.text.len(),
            format!("expected {expected} but the subscription ends"),
        )
    }

    fn is_keyword(&self, word: &str) -> bool {
        matches!(self.peek(), Some(Token { kind: TokenKind::Ident(w), .. }) if w.eq_ignore_ascii_case(word))
    }

    fn or_expr(&mut self) -> Result<Expr, SubscriptionError> {
        let mut left = self.and_expr()?;
        while self.is_keyword("or") || matches!(self.peek().map(|t| &t.kind), Some(TokenKind::OrOr))
        {
            self.pos += 1;
            left = Expr::Or(Box::new(left), Box::new(self.and_expr()?));
        }
        Ok(left)
    }

    fn and_expr(&mut self) -> Result<Expr, SubscriptionError> {
        let mut left = self.unary()?;
        while self.is_keyword("and")
            || matches!(self.peek().map(|t| &t.kind), Some(TokenKind::AndAnd))
        {
            self.pos += 1;
            left = Expr::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, SubscriptionError> {
        if self.is_keyword("not") || matches!(self.peek().map(|t| &t.kind), Some(TokenKind::Bang)) {
            self.pos += 1;
            return Ok(match self.unary()? {
                Expr::Text {
                    field,
                    op,
                    needle,
                    negated,
                } => Expr::Text {
                    field,
                    op,
                    needle,
                    negated: !negated,
                },
                other => Expr::Not(Box::new(other)),
            });
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expr, SubscriptionError> {
        let Some(tok) = self.next() else {
            return Err(self.end_error("a condition such as `type = \"track\"`"));
        };
        match tok.kind.clone() {
            TokenKind::LParen => {
                let inner = self.or_expr()?;
                match self.next() {
                    Some(Token {
                        kind: TokenKind::RParen,
                        ..
                    }) => Ok(inner),
                    Some(other) => Err(self.error_at(
                        other.start,
                        format!(
                            "expected ')' to close the '(' at column {} but found {}",
                            tok.start + 1,
                            other.describe(self.text)
                        ),
                    )),
                    None => {
                        Err(self.error_at(tok.start, "unclosed '(': add the matching ')'".into()))
                    }
                }
            }
            TokenKind::Ident(word)
                if matches!(self.peek().map(|t| &t.kind), Some(TokenKind::LParen)) =>
            {
                self.function(&word, &tok)
            }
            TokenKind::Ident(word) => {
                let field = Field::parse(&word).ok_or_else(|| {
                    self.error_at(
                        tok.start,
                        format!(
                            "unknown field '{word}' (use type, event, name, userId, properties.<path>, traits.<path> or context.<path>)"
                        ),
                    )
                })?;
                let op = match self.next() {
                    Some(Token {
                        kind: TokenKind::Op(op),
                        ..
                    }) => op,
                    Some(other) => {
                        return Err(self.error_at(
                            other.start,
                            format!("expected an operator (=, !=, <, <=, >, >=) after '{word}' but found {}", other.describe(self.text)),
                        ));
                    }
                    None => {
                        return Err(self.end_error(&format!(
                            "an operator (=, !=, <, <=, >, >=) after '{word}'"
                        )));
                    }
                };
                let check = Check::new(&field, op, &self.literal()?);
                // Segment compares with NaN here, which never matches: refuse it instead.
                if matches!(check, Check::Number(_, n) if n.is_nan()) {
                    return Err(self.error_at(tok.start, format!("'{word}' is compared with <, <=, > or >= to something that is not a number")));
                }
                Ok(Expr::Compare(field, check))
            }
            _ => Err(self.error_at(
                tok.start,
                format!("expected a condition but found {}", tok.describe(self.text)),
            )),
        }
    }

    fn literal(&mut self) -> Result<Literal, SubscriptionError> {
        let Some(tok) = self.next() else {
            return Err(self.end_error("a value (a \"string\", a number, true, false or null)"));
        };
        Ok(match tok.kind {
            TokenKind::Str(s) => Literal::String(s),
            TokenKind::Number(n) => Literal::Number(n),
            TokenKind::Ident(w) if w == "true" => Literal::Bool(true),
            TokenKind::Ident(w) if w == "false" => Literal::Bool(false),
            TokenKind::Ident(w) if w == "null" => Literal::Null,
            _ => {
                return Err(self.error_at(
                    tok.start,
                    format!("expected a value (a \"string\", a number, true, false or null) but found {}", tok.describe(self.text)),
                ));
            }
        })
    }

    fn function(&mut self, name: &str, name_tok: &Token) -> Result<Expr, SubscriptionError> {
        let is_match = match name {
            "contains" => false,
            "match" => true,
            _ => {
                return Err(self.error_at(
                    name_tok.start,
                    format!("unknown function '{name}' (use contains or match)"),
                ));
            }
        };
        self.pos += 1; // '('
        let field_tok = self.next().ok_or_else(|| self.end_error("a field name"))?;
        let TokenKind::Ident(path) = &field_tok.kind else {
            return Err(self.error_at(
                field_tok.start,
                format!(
                    "expected a field name but found {}",
                    field_tok.describe(self.text)
                ),
            ));
        };
        // Segment's functions take no `type` (they silently drop the condition): refuse it.
        let field = Field::parse(path)
            .filter(|f| f != &Field::TopLevel("type"))
            .ok_or_else(|| {
                self.error_at(
                    field_tok.start,
                    format!("unknown field '{path}' in {name}() (use event, name, userId, properties.<path>, traits.<path> or context.<path>)"),
                )
            })?;
        self.expect(TokenKind::Comma, "','")?;
        let needle = match self.next() {
            Some(Token {
                kind: TokenKind::Str(s),
                ..
            }) => s,
            Some(other) => {
                return Err(self.error_at(
                    other.start,
                    format!(
                        "{name}() needs a quoted string but found {}",
                        other.describe(self.text)
                    ),
                ));
            }
            None => return Err(self.end_error("a quoted string")),
        };
        self.expect(TokenKind::RParen, "')'")?;
        let (op, needle) = if !is_match {
            (TextOp::Contains, needle)
        } else if let Some(prefix) = needle.strip_suffix('*') {
            (TextOp::StartsWith, prefix.to_string())
        } else {
            // Segment treats every other pattern as "*suffix" and drops its first character.
            (TextOp::EndsWith, needle.chars().skip(1).collect())
        };
        Ok(Expr::Text {
            field,
            op,
            needle,
            negated: false,
        })
    }

    fn expect(&mut self, kind: TokenKind, what: &str) -> Result<(), SubscriptionError> {
        match self.next() {
            Some(tok) if tok.kind == kind => Ok(()),
            Some(tok) => Err(self.error_at(
                tok.start,
                format!("expected {what} but found {}", tok.describe(self.text)),
            )),
            None => Err(self.end_error(what)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn m(sub: &str, event: Value) -> bool {
        Subscription::parse(sub).unwrap().matches(&event)
    }

    #[test]
    fn precedence_and_negation() {
        assert!(m(r#"not type = "a" and type = "b""#, json!({"type": "b"})));
        assert!(!m(r#"!(type = "b" or type = "c")"#, json!({"type": "c"})));
        assert!(m(
            r#"type = "x" || type = "track" && event = "A""#,
            json!({"type": "track", "event": "A"})
        ));
    }

    #[test]
    fn each_path_reads_its_own_object() {
        let identify =
            json!({"type": "identify", "traits": {"plan": "pro"}, "context": {"ip": "1"}});
        assert!(m(r#"traits.plan = "pro""#, identify.clone()));
        assert!(!m(r#"properties.plan = "pro""#, identify.clone()));
        assert!(m(r#"context.ip = "1""#, identify));
    }

    #[test]
    fn operators_follow_the_field_and_the_literal_as_in_segment() {
        let event = json!({"type": "track", "event": "5", "userId": true,
            "properties": {"n": 4, "s": "4", "t": true, "f": false}});
        // Paths: typed number/boolean checks.
        assert!(m("properties.n != 3", event.clone()));
        assert!(!m("properties.s != 3", event.clone()));
        assert!(!m("properties.missing != 3", event.clone()));
        assert!(m("properties.t = true", event.clone()));
        assert!(m("properties.f = false", event.clone()));
        // `!= true` compares with the text "true": a boolean true is not that text.
        assert!(m("properties.t != true", event.clone()));
        assert!(m("properties.n > true", event.clone()));
        // Top-level fields compare with String(literal).
        assert!(m("event = 5", event.clone()));
        assert!(m("userId = true", event.clone()));
        assert!(m("type != null", event.clone()));
        assert!(!m("event = null", event.clone()));
        assert!(m(r#"properties.n >= "4""#, event.clone()));
        assert!(!m("name != null", event));
    }

    #[test]
    fn conditions_that_can_never_match_are_refused() {
        for text in [
            r#"properties.x > "abc""#,
            "event < null",
            r#"contains(type, "t")"#,
        ] {
            assert!(Subscription::parse(text).is_err(), "{text}");
        }
    }

    #[test]
    fn errors_point_at_the_text() {
        let e = Subscription::parse(r#"type = "track" and"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("ends"), "{e}");
        let e = Subscription::parse(r#"type = "track")"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("')'") && e.contains("column 15"), "{e}");
        let e = Subscription::parse(r#"properties.x > "a""#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a number"), "{e}");
    }
}
