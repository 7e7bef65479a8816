//! References inside runbook values: `${params.<name>}`, `${steps.<id>.outputs.<key>[.<key>…]}`,
//! `${run.id}`, `${run.target}`. `$${` is a literal `${`.
//!
//! A string that is exactly one reference takes the referenced JSON value as is (a number stays
//! a number, a list stays a list); a reference inside a longer string is interpolated (strings
//! verbatim, other values as compact JSON).

use serde_json::{Map, Value};

/// One reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ref {
    Param(String),
    /// `path` empty means the whole outputs object.
    StepOutput {
        step: String,
        path: Vec<String>,
    },
    RunId,
    RunTarget,
}

impl std::fmt::Display for Ref {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ref::Param(p) => write!(f, "${{params.{p}}}"),
            Ref::StepOutput { step, path } if path.is_empty() => {
                write!(f, "${{steps.{step}.outputs}}")
            }
            Ref::StepOutput { step, path } => {
                write!(f, "${{steps.{step}.outputs.{}}}", path.join("."))
            }
            Ref::RunId => write!(f, "${{run.id}}"),
            Ref::RunTarget => write!(f, "${{run.target}}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Segment {
    Lit(String),
    Ref(Ref),
}

fn parse_ref(body: &str) -> Result<Ref, String> {
    let parts: Vec<&str> = body.trim().split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(format!("bad reference ${{{body}}}: empty name part"));
    }
    match parts.as_slice() {
        ["params", name] => Ok(Ref::Param((*name).to_string())),
        ["params", ..] => Err(format!(
            "bad reference ${{{body}}}: write ${{params.<name>}}"
        )),
        ["steps", step, "outputs", rest @ ..] => Ok(Ref::StepOutput {
            step: (*step).to_string(),
            path: rest.iter().map(|s| s.to_string()).collect(),
        }),
        ["steps", ..] => Err(format!(
            "bad reference ${{{body}}}: write ${{steps.<id>.outputs.<key>}}"
        )),
        ["run", "id"] => Ok(Ref::RunId),
        ["run", "target"] => Ok(Ref::RunTarget),
        _ => Err(format!(
            "bad reference ${{{body}}}: expected params.<name>, steps.<id>.outputs.<key>, run.id or run.target"
        )),
    }
}

fn parse_segments(s: &str) -> Result<Vec<Segment>, String> {
    let mut out = Vec::new();
    let mut lit = String::new();
    let mut rest = s;
    while let Some(pos) = rest.find("${") {
        // `$${` escapes.
        if pos > 0 && rest.as_bytes()[pos - 1] == b'$' {
            lit.push_str(&rest[..pos - 1]);
            lit.push_str("${");
            rest = &rest[pos + 2..];
            continue;
        }
        lit.push_str(&rest[..pos]);
        let after = &rest[pos + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unterminated reference in {s:?}: missing '}}'"))?;
        if !lit.is_empty() {
            out.push(Segment::Lit(std::mem::take(&mut lit)));
        }
        out.push(Segment::Ref(parse_ref(&after[..end])?));
        rest = &after[end + 1..];
    }
    lit.push_str(rest);
    if !lit.is_empty() {
        out.push(Segment::Lit(lit));
    }
    Ok(out)
}

/// Every reference in `value` (recursively), or the first syntax error.
pub fn references(value: &Value) -> Result<Vec<Ref>, String> {
    let mut out = Vec::new();
    collect(value, &mut out)?;
    Ok(out)
}

fn collect(value: &Value, out: &mut Vec<Ref>) -> Result<(), String> {
    match value {
        Value::String(s) => {
            for seg in parse_segments(s)? {
                if let Segment::Ref(r) = seg {
                    out.push(r);
                }
            }
        }
        Value::Array(a) => {
            for v in a {
                collect(v, out)?;
            }
        }
        Value::Object(o) => {
            for v in o.values() {
                collect(v, out)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// What references resolve against.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    pub run_id: &'a str,
    pub target: &'a str,
    pub params: &'a Map<String, Value>,
    /// Step id → its outputs object.
    pub outputs: &'a Map<String, Value>,
    /// Missing step outputs resolve to `null` instead of failing (the rollback sequence, whose
    /// forward steps may never have run).
    pub lenient: bool,
}

impl<'a> Scope<'a> {
    /// A lenient scope over a checkpoint: its run, params and the given step outputs
    /// (`Checkpoint::outputs_by_step`), missing outputs resolving to `null`.
    pub fn lenient_over(
        cp: &'a crate::checkpoint::Checkpoint,
        outputs: &'a Map<String, Value>,
    ) -> Scope<'a> {
        Scope {
            run_id: &cp.run_id,
            target: &cp.target,
            params: &cp.params,
            outputs,
            lenient: true,
        }
    }
}

fn lookup(r: &Ref, scope: &Scope<'_>) -> Result<Value, String> {
    match r {
        Ref::RunId => Ok(Value::String(scope.run_id.to_string())),
        Ref::RunTarget => Ok(Value::String(scope.target.to_string())),
        Ref::Param(p) => scope
            .params
            .get(p)
            .cloned()
            .ok_or_else(|| format!("{r}: the run has no param {p:?}")),
        Ref::StepOutput { step, path } => {
            let Some(mut v) = scope.outputs.get(step) else {
                return if scope.lenient {
                    Ok(Value::Null)
                } else {
                    Err(format!("{r}: step {step:?} has recorded no outputs"))
                };
            };
            for key in path {
                match v.get(key.as_str()) {
                    Some(next) => v = next,
                    None if scope.lenient => return Ok(Value::Null),
                    None => {
                        return Err(format!(
                            "{r}: step {step:?} has no output {key:?} (it has: {})",
                            keys_of(v)
                        ));
                    }
                }
            }
            Ok(v.clone())
        }
    }
}

fn keys_of(v: &Value) -> String {
    match v {
        Value::Object(o) if !o.is_empty() => o.keys().cloned().collect::<Vec<_>>().join(", "),
        _ => "none".into(),
    }
}

/// Resolves every reference in `value`.
pub fn resolve(value: &Value, scope: &Scope<'_>) -> Result<Value, String> {
    match value {
        Value::String(s) => {
            let segs = parse_segments(s)?;
            if let [Segment::Ref(r)] = segs.as_slice() {
                return lookup(r, scope);
            }
            let mut out = String::new();
            for seg in segs {
                match seg {
                    Segment::Lit(l) => out.push_str(&l),
                    Segment::Ref(r) => match lookup(&r, scope)? {
                        Value::String(s) => out.push_str(&s),
                        Value::Null => {}
                        other => out.push_str(&other.to_string()),
                    },
                }
            }
            Ok(Value::String(out))
        }
        Value::Array(a) => a
            .iter()
            .map(|v| resolve(v, scope))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        Value::Object(o) => {
            let mut m = Map::new();
            for (k, v) in o {
                m.insert(k.clone(), resolve(v, scope)?);
            }
            Ok(Value::Object(m))
        }
        other => Ok(other.clone()),
    }
}

/// Truthiness for `when:`: false, null, "", "false", 0 and empty lists/objects are false.
pub fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !(s.is_empty() || s == "false" || s == "0"),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn scope<'a>(params: &'a Map<String, Value>, outputs: &'a Map<String, Value>) -> Scope<'a> {
        Scope {
            run_id: "r1",
            target: "t1",
            params,
            outputs,
            lenient: false,
        }
    }

    #[test]
    fn whole_string_reference_keeps_type_and_embedded_interpolates() {
        let params = json!({"n": 3, "tag": "prod"}).as_object().unwrap().clone();
        let outputs = json!({"a": {"rev": "asm-1-28", "list": [1, 2]}})
            .as_object()
            .unwrap()
            .clone();
        let s = scope(&params, &outputs);
        assert_eq!(resolve(&json!("${params.n}"), &s).unwrap(), json!(3));
        assert_eq!(
            resolve(&json!("${steps.a.outputs.list}"), &s).unwrap(),
            json!([1, 2])
        );
        assert_eq!(
            resolve(
                &json!("tag ${params.tag} -> ${steps.a.outputs.rev} n=${params.n}"),
                &s
            )
            .unwrap(),
            json!("tag prod -> asm-1-28 n=3")
        );
        assert_eq!(
            resolve(&json!({"x": ["${run.id}", "$${literal}"]}), &s).unwrap(),
            json!({"x": ["r1", "${literal}"]})
        );
    }

    #[test]
    fn missing_output_fails_unless_lenient() {
        let params = Map::new();
        let outputs = json!({"a": {"rev": "x"}}).as_object().unwrap().clone();
        let mut s = scope(&params, &outputs);
        let err = resolve(&json!("${steps.a.outputs.nope}"), &s).unwrap_err();
        assert!(
            err.contains("has no output \"nope\" (it has: rev)"),
            "{err}"
        );
        assert!(resolve(&json!("${steps.b.outputs.x}"), &s).is_err());
        s.lenient = true;
        assert_eq!(
            resolve(&json!("${steps.b.outputs.x}"), &s).unwrap(),
            Value::Null
        );
    }

    #[test]
    fn syntax_errors_are_reported() {
        assert!(references(&json!("${params}")).is_err());
        assert!(references(&json!("${steps.a.result}")).is_err());
        assert!(references(&json!("${params.x")).is_err());
        assert!(references(&json!("${foo.bar}")).is_err());
        assert_eq!(
            references(&json!(["${params.a}", {"k": "${steps.s.outputs}"}])).unwrap(),
            vec![
                Ref::Param("a".into()),
                Ref::StepOutput {
                    step: "s".into(),
                    path: vec![]
                }
            ]
        );
    }
}
