//! Label selectors (the full string grammar of `apimachinery/pkg/labels`, and the structured
//! `matchLabels`/`matchExpressions` form) and field selectors.

use serde_json::{Map, Value};

#[derive(Clone, Debug, PartialEq)]
pub enum Req {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
    Gt(String, i64),
    Lt(String, i64),
}

/// A parsed label selector: all requirements must hold (empty = everything).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LabelSelector(pub Vec<Req>);

impl LabelSelector {
    pub fn matches(&self, labels: Option<&Map<String, Value>>) -> bool {
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            Req::Eq(k, v) => get(k) == Some(v.as_str()),
            Req::NotEq(k, v) => get(k) != Some(v.as_str()),
            Req::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Req::NotIn(k, vs) => get(k).is_none_or(|x| !vs.iter().any(|v| v == x)),
            Req::Exists(k) => get(k).is_some(),
            Req::NotExists(k) => get(k).is_none(),
            Req::Gt(k, n) => get(k)
                .and_then(|x| x.parse::<i64>().ok())
                .is_some_and(|x| x > *n),
            Req::Lt(k, n) => get(k)
                .and_then(|x| x.parse::<i64>().ok())
                .is_some_and(|x| x < *n),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The structured form (`{matchLabels, matchExpressions}`), as Deployments and webhooks
    /// carry it. A missing selector selects everything; an unknown operator selects nothing.
    pub fn from_json(sel: Option<&Value>) -> Self {
        let mut reqs = Vec::new();
        let Some(sel) = sel else {
            return Self(reqs);
        };
        if let Some(ml) = sel.get("matchLabels").and_then(Value::as_object) {
            for (k, v) in ml {
                reqs.push(Req::Eq(k.clone(), v.as_str().unwrap_or("").to_string()));
            }
        }
        if let Some(exprs) = sel.get("matchExpressions").and_then(Value::as_array) {
            for e in exprs {
                let key = e
                    .get("key")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                let values: Vec<String> = e
                    .get("values")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                match e.get("operator").and_then(Value::as_str).unwrap_or("") {
                    "In" => reqs.push(Req::In(key, values)),
                    "NotIn" => reqs.push(Req::NotIn(key, values)),
                    "Exists" => reqs.push(Req::Exists(key)),
                    "DoesNotExist" => reqs.push(Req::NotExists(key)),
                    _ => reqs.push(Req::In(key, Vec::new())),
                }
            }
        }
        Self(reqs)
    }

    /// The string grammar: `a=b,c!=d,e in (f, g),h notin (i),j,!k,l>3`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut p = Parser {
            chars: s.chars().collect(),
            pos: 0,
        };
        let mut reqs = Vec::new();
        p.skip_ws();
        if p.at_end() {
            return Ok(Self(reqs));
        }
        loop {
            reqs.push(p.requirement()?);
            p.skip_ws();
            if p.at_end() {
                break;
            }
            if !p.eat(',') {
                return Err(format!(
                    "unable to parse requirement: found '{}', expected: ','",
                    p.rest()
                ));
            }
        }
        Ok(Self(reqs))
    }
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
}

impl Parser {
    fn at_end(&self) -> bool {
        self.pos >= self.chars.len()
    }
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }
    fn rest(&self) -> String {
        self.chars[self.pos.min(self.chars.len())..]
            .iter()
            .collect()
    }
    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }
    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }
    fn word(&mut self) -> String {
        self.skip_ws();
        let start = self.pos;
        while let Some(c) = self.peek() {
            if c.is_whitespace() || "=!(),<>".contains(c) {
                break;
            }
            self.pos += 1;
        }
        self.chars[start..self.pos].iter().collect()
    }

    fn requirement(&mut self) -> Result<Req, String> {
        self.skip_ws();
        if self.eat('!') {
            let key = self.word();
            validate_key(&key)?;
            return Ok(Req::NotExists(key));
        }
        let key = self.word();
        validate_key(&key)?;
        self.skip_ws();
        match self.peek() {
            None | Some(',') => Ok(Req::Exists(key)),
            Some('=') => {
                self.pos += 1;
                self.eat('=');
                let v = self.word();
                validate_value(&v)?;
                Ok(Req::Eq(key, v))
            }
            Some('!') => {
                self.pos += 1;
                if !self.eat('=') {
                    return Err(format!(
                        "unable to parse requirement: expected '=' after '!' in {key}"
                    ));
                }
                let v = self.word();
                validate_value(&v)?;
                Ok(Req::NotEq(key, v))
            }
            Some('>') | Some('<') => {
                let gt = self.peek() == Some('>');
                self.pos += 1;
                let v = self.word();
                let n: i64 = v.parse().map_err(|_| {
                    format!("for 'Gt', 'Lt' operators, the value must be an integer: {v:?}")
                })?;
                Ok(if gt { Req::Gt(key, n) } else { Req::Lt(key, n) })
            }
            _ => {
                let op = self.word();
                let values = match op.as_str() {
                    "in" | "notin" => self.set()?,
                    other => {
                        return Err(format!(
                            "unable to parse requirement: found '{other}', expected: in, notin, =, ==, !=, gt, lt"
                        ));
                    }
                };
                Ok(if op == "in" {
                    Req::In(key, values)
                } else {
                    Req::NotIn(key, values)
                })
            }
        }
    }

    fn set(&mut self) -> Result<Vec<String>, String> {
        self.skip_ws();
        if !self.eat('(') {
            return Err(format!("found '{}', expected: '('", self.rest()));
        }
        let mut out = Vec::new();
        loop {
            let v = self.word();
            validate_value(&v)?;
            out.push(v);
            self.skip_ws();
            if self.eat(')') {
                break;
            }
            if !self.eat(',') {
                return Err(format!("found '{}', expected: ',' or ')'", self.rest()));
            }
        }
        Ok(out)
    }
}

fn validate_key(key: &str) -> Result<(), String> {
    let name = key.rsplit('/').next().unwrap_or("");
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
        && key.matches('/').count() <= 1;
    if ok {
        Ok(())
    } else {
        Err(format!(
            "key: Invalid value: {key:?}: name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
        ))
    }
}

fn validate_value(v: &str) -> Result<(), String> {
    let ok = v.is_empty()
        || (v.len() <= 63
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && v.starts_with(|c: char| c.is_ascii_alphanumeric())
            && v.ends_with(|c: char| c.is_ascii_alphanumeric()));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "values[0]: Invalid value: {v:?}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
        ))
    }
}

/// A field selector: `k=v`, `k==v`, `k!=v`, comma-joined.
#[derive(Clone, Debug, Default)]
pub struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    pub fn parse(s: &str, kind: &str) -> Result<Self, String> {
        let mut out = Vec::new();
        for part in split_unescaped(s, ',') {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let (k, eq, v) = if let Some((k, v)) = part.split_once("!=") {
                (k, false, v)
            } else if let Some((k, v)) = part.split_once("==") {
                (k, true, v)
            } else if let Some((k, v)) = part.split_once('=') {
                (k, true, v)
            } else {
                return Err(format!(
                    "invalid selector: '{part}'; can't understand '{part}'"
                ));
            };
            let k = k.trim();
            let allowed: &[&str] = if kind == "Pod" {
                &[
                    "metadata.name",
                    "metadata.namespace",
                    "spec.nodeName",
                    "spec.restartPolicy",
                    "spec.schedulerName",
                    "spec.serviceAccountName",
                    "spec.hostNetwork",
                    "status.phase",
                    "status.podIP",
                    "status.nominatedNodeName",
                ]
            } else {
                &["metadata.name", "metadata.namespace"]
            };
            if !allowed.contains(&k) {
                return Err(format!("field label not supported: {k}"));
            }
            out.push((k.to_string(), eq, v.replace("\\,", ",").replace("\\=", "=")));
        }
        Ok(Self(out))
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(k, eq, v)| {
            let mut cur = obj;
            for seg in k.split('.') {
                cur = cur.get(seg).unwrap_or(&Value::Null);
            }
            let actual = match cur {
                Value::String(s) => s.clone(),
                Value::Bool(b) => b.to_string(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            (actual == *v) == *eq
        })
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The answer from an object's namespace and name alone, when every term is on
    /// `metadata.name` or `metadata.namespace` (as `kubectl rollout status` watches are);
    /// `None` when a term needs the object itself.
    pub fn matches_meta(&self, namespace: &str, name: &str) -> Option<bool> {
        let mut all = true;
        for (k, eq, v) in &self.0 {
            let actual = match k.as_str() {
                "metadata.name" => name,
                "metadata.namespace" => namespace,
                _ => return None,
            };
            all &= (actual == v) == *eq;
        }
        Some(all)
    }
}

fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut esc = false;
    for c in s.chars() {
        if esc {
            cur.push('\\');
            cur.push(c);
            esc = false;
        } else if c == '\\' {
            esc = true;
        } else if c == sep {
            out.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    out.push(cur);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn parses_the_full_grammar() {
        let s = LabelSelector::parse("a=b, c==d,e!=f,g in (h, i),j notin (k),l,!m,n>3").unwrap();
        assert_eq!(s.0.len(), 8);
        let l = labels(json!({"a":"b","c":"d","g":"i","l":"x","n":"4"}));
        assert!(s.matches(Some(&l)));
        let l2 = labels(json!({"a":"b","c":"d","g":"i","l":"x","n":"4","m":"1"}));
        assert!(!s.matches(Some(&l2)));
    }

    #[test]
    fn not_in_and_not_eq_match_missing_labels() {
        let s = LabelSelector::parse("x notin (a),y!=b").unwrap();
        assert!(s.matches(None));
    }

    #[test]
    fn name_and_namespace_fields_are_answered_without_the_object() {
        let f = FieldSelector::parse(
            "metadata.name=web,metadata.namespace!=kube-system",
            "Deployment",
        )
        .unwrap();
        assert_eq!(f.matches_meta("shop", "web"), Some(true));
        assert_eq!(f.matches_meta("shop", "api"), Some(false));
        assert_eq!(f.matches_meta("kube-system", "web"), Some(false));
        let obj = json!({"metadata": {"name": "web", "namespace": "shop"}});
        assert_eq!(f.matches_meta("shop", "web"), Some(f.matches(&obj)));
        // a field of the object itself needs the object
        let p = FieldSelector::parse("status.phase=Running", "Pod").unwrap();
        assert_eq!(p.matches_meta("shop", "web"), None);
    }

    #[test]
    fn rejects_garbage() {
        assert!(LabelSelector::parse("a in b").is_err());
        assert!(LabelSelector::parse("a=b c").is_err());
        assert!(LabelSelector::parse("a=(").is_err());
    }

    #[test]
    fn istio_revision_webhook_query() {
        let s = LabelSelector::parse("istio.io/rev=asm-1-27,!istio.io/tag").unwrap();
        assert!(s.matches(Some(&labels(json!({"istio.io/rev":"asm-1-27"})))));
        assert!(!s.matches(Some(&labels(
            json!({"istio.io/rev":"asm-1-27","istio.io/tag":"prod"})
        ))));
    }

    #[test]
    fn field_selectors() {
        let f =
            FieldSelector::parse("metadata.name=web,metadata.namespace!=x", "Deployment").unwrap();
        assert!(f.matches(&json!({"metadata":{"name":"web","namespace":"y"}})));
        assert!(FieldSelector::parse("spec.replicas=1", "Deployment").is_err());
        let p = FieldSelector::parse("status.phase=Running", "Pod").unwrap();
        assert!(p.matches(&json!({"status":{"phase":"Running"}})));
    }
}
