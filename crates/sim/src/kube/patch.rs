//! Patches: JSON merge patch (RFC 7386), JSON patch (RFC 6902), strategic merge patch for the
//! built-in kinds, and a pragmatic server-side apply.
//!
//! Strategic merge: lists merge by the merge keys of `kubernetes/api` struct tags (containers,
//! env, ports, volumes, conditions, ownerReferences, webhooks, …); the directives `$patch`
//! (`replace`, `delete`, `merge`), `$setElementOrder/<field>`, `$deleteFromPrimitiveList/<field>`
//! and `$retainKeys` are consumed, never stored.
//!
//! Server-side apply covers: field ownership per manager at leaf granularity (lists with a
//! merge key are tracked per element, other lists as one atomic field), `managedFields` in the
//! real `FieldsV1` shape, conflicts with other managers (409 with `FieldManagerConflict` causes),
//! `force` moving ownership, removal of fields a manager stops applying when no one else owns
//! them, and ownership moving to a non-apply writer that changes a field. It does not model
//! `x-kubernetes-list-type: set` lists or per-version conversion.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use super::object::now_rfc3339;
use super::resources::ResourceType;
use super::status::ApiError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchType {
    Json,
    Merge,
    Strategic,
    Apply,
}

impl PatchType {
    pub fn from_content_type(ct: &str) -> Option<Self> {
        let base = ct.split(';').next().unwrap_or("").trim();
        match base {
            "application/json-patch+json" => Some(Self::Json),
            "application/merge-patch+json" => Some(Self::Merge),
            "application/strategic-merge-patch+json" => Some(Self::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Some(Self::Apply),
            _ => None,
        }
    }
}

pub fn merge_patch(target: &Value, patch: &Value) -> Value {
    let mut out = target.clone();
    json_patch::merge(&mut out, patch);
    out
}

pub fn json_patch(target: &Value, patch: &Value) -> Result<Value, ApiError> {
    let p: json_patch::Patch = serde_json::from_value(patch.clone()).map_err(|e| {
        ApiError::bad_request(format!(
            "the server rejected our request due to an error in our request: {e}"
        ))
    })?;
    let mut out = target.clone();
    json_patch::patch(&mut out, &p).map_err(|e| ApiError {
        code: 422,
        reason: "Invalid",
        message: e.to_string(),
        details: Value::Null,
    })?;
    Ok(out)
}

/// The merge key of a list field, by its name and where it sits.
/// `Some("")` = a set of primitives merged by value.
fn merge_key(path: &[String], field: &str) -> Option<&'static str> {
    let in_container = path
        .iter()
        .rev()
        .take(2)
        .any(|p| p == "containers" || p == "initContainers" || p == "ephemeralContainers");
    match field {
        "containers" | "initContainers" | "ephemeralContainers" => Some("name"),
        "env" | "volumes" | "imagePullSecrets" | "webhooks" => Some("name"),
        "ports" if in_container => Some("containerPort"),
        "ports" => Some("port"),
        "volumeMounts" => Some("mountPath"),
        "volumeDevices" => Some("devicePath"),
        "hostAliases" => Some("ip"),
        "topologySpreadConstraints" => Some("topologyKey"),
        "conditions" => Some("type"),
        "ownerReferences" => Some("uid"),
        "finalizers" => Some(""),
        _ => None,
    }
}

pub fn strategic_merge(target: &Value, patch: &Value) -> Result<Value, ApiError> {
    let mut path = Vec::new();
    smp_value(target, patch, &mut path).map(|v| v.unwrap_or(Value::Null))
}

/// `None` = delete this value.
fn smp_value(
    orig: &Value,
    patch: &Value,
    path: &mut Vec<String>,
) -> Result<Option<Value>, ApiError> {
    let Some(pmap) = patch.as_object() else {
        return Ok(Some(patch.clone()));
    };
    match pmap.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            let mut m = pmap.clone();
            m.remove("$patch");
            return Ok(Some(strip_directives(&Value::Object(m))));
        }
        Some("delete") => return Ok(None),
        Some("merge") | None => {}
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "unknown patch type: {other} in map: {}",
                patch
            )));
        }
    }
    let mut result = orig.as_object().cloned().unwrap_or_default();
    let mut order: Vec<(String, Vec<Value>)> = Vec::new();
    let mut retain: Option<Vec<String>> = None;
    for (k, v) in pmap {
        if k == "$patch" {
            continue;
        }
        if let Some(field) = k.strip_prefix("$setElementOrder/") {
            order.push((field.to_string(), v.as_array().cloned().unwrap_or_default()));
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let Some(Value::Array(list)) = result.get_mut(field) {
                let del = v.as_array().cloned().unwrap_or_default();
                list.retain(|x| !del.contains(x));
            }
            continue;
        }
        if k == "$retainKeys" {
            retain = Some(
                v.as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|s| s.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default(),
            );
            continue;
        }
        if v.is_null() {
            result.remove(k);
            continue;
        }
        path.push(k.clone());
        let merged = match (result.get(k), v) {
            (Some(o), Value::Object(_)) if o.is_object() => smp_value(o, v, path)?,
            (o, Value::Array(items)) => match merge_key(&path[..path.len() - 1], k) {
                Some(key) => Some(merge_list(
                    o.and_then(Value::as_array).cloned().unwrap_or_default(),
                    items,
                    key,
                    path,
                )?),
                None => Some(strip_directives(v)),
            },
            (_, Value::Object(_)) => smp_value(&Value::Object(Map::new()), v, path)?,
            _ => Some(v.clone()),
        };
        path.pop();
        match merged {
            Some(m) => {
                result.insert(k.clone(), m);
            }
            None => {
                result.remove(k);
            }
        }
    }
    for (field, wanted) in order {
        if let Some(Value::Array(list)) = result.get_mut(&field) {
            set_element_order(list, &wanted, merge_key(path, &field).unwrap_or(""));
        }
    }
    if let Some(keep) = retain {
        result.retain(|k, _| keep.contains(k) || pmap.contains_key(k));
    }
    Ok(Some(Value::Object(result)))
}

/// `$setElementOrder`: the elements of `list` named in `wanted` (by `key`, or whole for a
/// list of primitives) first, in that order; the others after them.
fn set_element_order(list: &mut Vec<Value>, wanted: &[Value], key: &str) {
    let ident = |x: &Value| -> Value {
        if key.is_empty() {
            x.clone()
        } else {
            x.get(key).cloned().unwrap_or(Value::Null)
        }
    };
    let mut sorted = Vec::with_capacity(list.len());
    for w in wanted {
        let wid = ident(w);
        if let Some(pos) = list.iter().position(|x| ident(x) == wid) {
            sorted.push(list.remove(pos));
        }
    }
    sorted.append(list);
    *list = sorted;
}

fn merge_list(
    mut orig: Vec<Value>,
    items: &[Value],
    key: &str,
    path: &mut Vec<String>,
) -> Result<Value, ApiError> {
    if key.is_empty() {
        for it in items {
            if !orig.contains(it) {
                orig.push(it.clone());
            }
        }
        return Ok(Value::Array(orig));
    }
    if items
        .iter()
        .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        return Ok(Value::Array(
            items
                .iter()
                .filter(|i| i.get("$patch").is_none())
                .map(strip_directives)
                .collect(),
        ));
    }
    for it in items {
        let id = it.get(key).cloned();
        let pos = id
            .as_ref()
            .and_then(|id| orig.iter().position(|o| o.get(key) == Some(id)));
        if it.get("$patch").and_then(Value::as_str) == Some("delete") {
            if let Some(p) = pos {
                orig.remove(p);
            }
            continue;
        }
        match pos {
            Some(p) => {
                if let Some(m) = smp_value(&orig[p], it, path)? {
                    orig[p] = m;
                }
            }
            None => {
                if let Some(m) = smp_value(&Value::Object(Map::new()), it, path)? {
                    orig.push(m);
                }
            }
        }
    }
    Ok(Value::Array(orig))
}

fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

// ---------------------------------------------------------------------------------------
// Field ownership (server-side apply)

/// A path to a field: `f:<name>` for a map key, `k:<json>` for a keyed list element.
type FieldPath = Vec<String>;

const SERVER_OWNED_META: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
];

/// The leaf fields set in `v`.
pub fn leaf_fields(v: &Value) -> BTreeSet<FieldPath> {
    let mut out = BTreeSet::new();
    let Some(m) = v.as_object() else {
        return out;
    };
    for (k, val) in m {
        if k == "apiVersion" || k == "kind" || k == "status" {
            continue;
        }
        if k == "metadata" {
            if let Some(meta) = val.as_object() {
                for (mk, mv) in meta {
                    if SERVER_OWNED_META.contains(&mk.as_str()) {
                        continue;
                    }
                    let mut path = vec!["f:metadata".to_string(), format!("f:{mk}")];
                    collect(mv, &mut path, &mut out, &["metadata".to_string()], mk);
                }
            }
            continue;
        }
        let mut path = vec![format!("f:{k}")];
        collect(val, &mut path, &mut out, &[], k);
    }
    out
}

fn collect(
    v: &Value,
    path: &mut FieldPath,
    out: &mut BTreeSet<FieldPath>,
    names: &[String],
    field: &str,
) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            let mut names = names.to_vec();
            names.push(field.to_string());
            for (k, val) in m {
                path.push(format!("f:{k}"));
                collect(val, path, out, &names, k);
                path.pop();
            }
        }
        Value::Array(items) => match merge_key(names, field) {
            Some(key) if !key.is_empty() && items.iter().all(|i| i.get(key).is_some()) => {
                let mut names = names.to_vec();
                names.push(field.to_string());
                for it in items {
                    let id = json!({ key: it[key].clone() }).to_string();
                    path.push(format!("k:{id}"));
                    out.insert(path.clone());
                    if let Some(m) = it.as_object() {
                        for (k, val) in m {
                            path.push(format!("f:{k}"));
                            collect(val, path, out, &names, k);
                            path.pop();
                        }
                    }
                    path.pop();
                }
            }
            _ => {
                out.insert(path.clone());
            }
        },
        _ => {
            out.insert(path.clone());
        }
    }
}

/// The value at a field path, if set.
fn value_at<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = v;
    for seg in path {
        if let Some(name) = seg.strip_prefix("f:") {
            cur = cur.get(name)?;
        } else if let Some(id) = seg.strip_prefix("k:") {
            let id: Map<String, Value> = serde_json::from_str(id).ok()?;
            let (k, want) = id.iter().next()?;
            cur = cur.as_array()?.iter().find(|i| i.get(k) == Some(want))?;
        }
    }
    Some(cur)
}

fn remove_at(v: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = v;
    for seg in parents {
        let next = if let Some(name) = seg.strip_prefix("f:") {
            cur.get_mut(name)
        } else if let Some(id) = seg.strip_prefix("k:") {
            let Ok(id) = serde_json::from_str::<Map<String, Value>>(id) else {
                return;
            };
            let Some((k, want)) = id.iter().next() else {
                return;
            };
            cur.as_array_mut()
                .and_then(|a| a.iter_mut().find(|i| i.get(k) == Some(want)))
        } else {
            None
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    if let Some(name) = last.strip_prefix("f:") {
        if let Some(m) = cur.as_object_mut() {
            m.remove(name);
        }
    } else if let Some(id) = last.strip_prefix("k:")
        && let Ok(id) = serde_json::from_str::<Map<String, Value>>(id)
        && let Some((k, want)) = id.iter().next()
        && let Some(a) = cur.as_array_mut()
    {
        a.retain(|i| i.get(k) != Some(want));
    }
}

/// `FieldsV1` JSON from a set of paths.
fn to_fields_v1(paths: &BTreeSet<FieldPath>) -> Value {
    let mut root = Map::new();
    for p in paths {
        let mut cur = &mut root;
        for (i, seg) in p.iter().enumerate() {
            let entry = cur.entry(seg.clone()).or_insert_with(|| json!({}));
            let m = entry.as_object_mut().expect("fields object");
            if seg.starts_with("k:") && i + 1 < p.len() {
                m.entry(".").or_insert_with(|| json!({}));
            }
            cur = m;
        }
    }
    Value::Object(root)
}

fn from_fields_v1(v: &Value) -> BTreeSet<FieldPath> {
    fn walk(v: &Value, path: &mut FieldPath, out: &mut BTreeSet<FieldPath>) {
        let Some(m) = v.as_object() else { return };
        let children: Vec<_> = m.iter().filter(|(k, _)| k.as_str() != ".").collect();
        if (children.is_empty() || m.contains_key(".")) && !path.is_empty() {
            out.insert(path.clone());
        }
        for (k, c) in children {
            path.push(k.clone());
            walk(c, path, out);
            path.pop();
        }
    }
    let mut out = BTreeSet::new();
    walk(v, &mut Vec::new(), &mut out);
    out
}

#[derive(Clone, Debug)]
struct Entry {
    manager: String,
    operation: String,
    api_version: String,
    time: String,
    fields: BTreeSet<FieldPath>,
    subresource: Option<String>,
}

fn read_managed(obj: &Value) -> Vec<Entry> {
    obj.get("metadata")
        .and_then(|m| m.get("managedFields"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|e| Entry {
                    manager: e["manager"].as_str().unwrap_or("").to_string(),
                    operation: e["operation"].as_str().unwrap_or("Update").to_string(),
                    api_version: e["apiVersion"].as_str().unwrap_or("").to_string(),
                    time: e["time"].as_str().unwrap_or("").to_string(),
                    fields: from_fields_v1(e.get("fieldsV1").unwrap_or(&Value::Null)),
                    subresource: e["subresource"].as_str().map(str::to_string),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn write_managed(obj: &mut Value, entries: &[Entry]) {
    let list: Vec<Value> = entries
        .iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            let mut m = json!({
                "manager": e.manager,
                "operation": e.operation,
                "apiVersion": e.api_version,
                "time": e.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": to_fields_v1(&e.fields),
            });
            if let Some(s) = &e.subresource {
                m["subresource"] = json!(s);
            }
            m
        })
        .collect();
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if list.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(list));
        }
    }
}

fn path_string(p: &FieldPath) -> String {
    let mut s = String::new();
    for seg in p {
        if let Some(n) = seg.strip_prefix("f:") {
            s.push('.');
            s.push_str(n);
        } else if let Some(k) = seg.strip_prefix("k:") {
            s.push('[');
            s.push_str(&k.replace(':', "="));
            s.push(']');
        }
    }
    s
}

/// Records ownership after a non-apply write (create, update, merge/JSON/strategic patch):
/// the fields this write changed move to `manager` (operation `Update`).
pub fn record_update(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    rt: &ResourceType,
    subresource: Option<&str>,
) {
    let mut entries = read_managed(old.unwrap_or(&Value::Null));
    let new_fields = leaf_fields(new);
    let changed: BTreeSet<FieldPath> = new_fields
        .iter()
        .filter(|p| old.is_none_or(|o| value_at(o, p) != value_at(new, p)))
        .cloned()
        .collect();
    // fields that are gone are nobody's
    for e in entries.iter_mut() {
        e.fields
            .retain(|p| new_fields.contains(p) && !changed.contains(p));
    }
    if !changed.is_empty() {
        let now = now_rfc3339();
        match entries.iter_mut().find(|e| {
            e.manager == manager
                && e.operation == "Update"
                && e.subresource.as_deref() == subresource
        }) {
            Some(e) => {
                e.fields.extend(changed);
                e.time = now;
            }
            None => entries.push(Entry {
                manager: manager.to_string(),
                operation: "Update".into(),
                api_version: rt.api_version(),
                time: now,
                fields: changed,
                subresource: subresource.map(str::to_string),
            }),
        }
    }
    write_managed(new, &entries);
}

/// Server-side apply of `applied` by `manager` onto `current` (`None` = create).
pub fn apply(
    current: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    rt: &ResourceType,
) -> Result<Value, ApiError> {
    let base = current.cloned().unwrap_or_else(|| json!({}));
    let mut entries = read_managed(&base);
    let applied_fields = leaf_fields(applied);
    let mut conflicts: Vec<(String, String, FieldPath)> = Vec::new();
    for e in entries.iter() {
        if e.manager == manager && e.operation == "Apply" {
            continue;
        }
        for p in e.fields.intersection(&applied_fields) {
            if value_at(&base, p) != value_at(applied, p) {
                let who = if e.operation == "Apply" {
                    format!("\"{}\"", e.manager)
                } else {
                    format!("\"{}\" using {}", e.manager, e.api_version)
                };
                conflicts.push((e.manager.clone(), who, p.clone()));
            }
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflict_error(&conflicts));
    }
    // force (or agreement): ownership of the applied fields moves to this manager
    for e in entries.iter_mut() {
        if !(e.manager == manager && e.operation == "Apply") {
            e.fields.retain(|p| !applied_fields.contains(p));
        }
    }
    let previously: BTreeSet<FieldPath> = entries
        .iter()
        .find(|e| e.manager == manager && e.operation == "Apply")
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    let mut merged = strategic_merge(&base, &strip_meta_for_apply(applied))?;
    // fields this manager applied before, applies no more, and no one else owns: removed
    let others: BTreeSet<FieldPath> = entries
        .iter()
        .filter(|e| !(e.manager == manager && e.operation == "Apply"))
        .flat_map(|e| e.fields.iter().cloned())
        .collect();
    for p in previously.difference(&applied_fields) {
        if !others.contains(p) && !others.iter().any(|o| o.starts_with(p)) {
            remove_at(&mut merged, p);
        }
    }
    let now = now_rfc3339();
    match entries
        .iter_mut()
        .find(|e| e.manager == manager && e.operation == "Apply")
    {
        Some(e) => {
            e.fields = applied_fields;
            e.time = now;
        }
        None => entries.push(Entry {
            manager: manager.to_string(),
            operation: "Apply".into(),
            api_version: rt.api_version(),
            time: now,
            fields: applied_fields,
            subresource: None,
        }),
    }
    write_managed(&mut merged, &entries);
    Ok(merged)
}

/// The 409 of an apply that would take fields other managers own: (who, how named, field).
fn conflict_error(conflicts: &[(String, String, FieldPath)]) -> ApiError {
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|(_, who, p)| {
            json!({"reason": "FieldManagerConflict", "message": format!("conflict with {who}"), "field": path_string(p)})
        })
        .collect();
    let message = if conflicts.len() == 1 {
        format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            conflicts[0].1,
            path_string(&conflicts[0].2)
        )
    } else {
        let mut by: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (_, who, p) in conflicts {
            by.entry(who.clone()).or_default().push(path_string(p));
        }
        let mut m = format!("Apply failed with {} conflicts:", conflicts.len());
        for (who, paths) in by {
            m.push_str(&format!(" conflicts with {who}:"));
            for p in paths {
                m.push_str(&format!("\n- {p}"));
            }
        }
        m
    };
    ApiError {
        code: 409,
        reason: "Conflict",
        message,
        details: json!({"causes": causes}),
    }
}

fn strip_meta_for_apply(applied: &Value) -> Value {
    let mut a = applied.clone();
    if let Some(meta) = a.get_mut("metadata").and_then(Value::as_object_mut) {
        for k in [
            "uid",
            "resourceVersion",
            "generation",
            "creationTimestamp",
            "managedFields",
        ] {
            meta.remove(k);
        }
    }
    if let Some(m) = a.as_object_mut() {
        m.remove("status");
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smp_merges_containers_by_name_and_consumes_directives() {
        let orig = json!({"spec":{"template":{"spec":{"containers":[
            {"name":"app","image":"a:1","env":[{"name":"X","value":"1"}]},
            {"name":"side","image":"s:1"}]}}}});
        let patch = json!({"spec":{"template":{"spec":{
            "$setElementOrder/containers":[{"name":"side"},{"name":"app"}],
            "containers":[{"name":"app","image":"a:2","env":[{"name":"Y","value":"2"}]},
                          {"name":"side","$patch":"delete"}]}}}});
        let out = strategic_merge(&orig, &patch).unwrap();
        let cs = out["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap();
        assert_eq!(cs.len(), 1);
        assert_eq!(cs[0]["image"], "a:2");
        assert_eq!(cs[0]["env"].as_array().unwrap().len(), 2);
        assert!(!out.to_string().contains('$'));
    }

    #[test]
    fn smp_replaces_plain_lists_and_deletes_nulls() {
        let orig = json!({"spec":{"args":["a","b"],"x":1}});
        let out = strategic_merge(&orig, &json!({"spec":{"args":["c"],"x":null}})).unwrap();
        assert_eq!(out, json!({"spec":{"args":["c"]}}));
    }

    #[test]
    fn fields_v1_round_trips() {
        let v = json!({"metadata":{"labels":{"a":"b"}},"spec":{"replicas":2,"template":{"spec":{"containers":[{"name":"web","image":"x"}]}}}});
        let f = leaf_fields(&v);
        let back = from_fields_v1(&to_fields_v1(&f));
        assert_eq!(f, back);
    }
}
