//! Step 4 (repoint-tag, gate tag-points-at) and its undo (restore-tag).
//!
//! Tag mode moves the revision tag webhook the way `istioctl tag set <tag> --revision <rev>
//! --overwrite` does (server-side apply, force, istioctl's field manager, so either tool can
//! move it next). Label mode relabels the namespaces that name the source revision directly.

use std::collections::BTreeMap;
use std::sync::Arc;

use asm_canary_engine::{
    Action, ActionCtx, ActionOutcome, EntryId, Gate, GateCtx, GateStatus, StepError,
};
use async_trait::async_trait;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams};
use serde_json::json;

use super::{Env, kube_err, outputs};
use crate::istio::tag::{render_tag_webhook, tag_revision, tag_webhook_name};
use crate::istio::{ISTIO_NAMESPACE, REV_LABEL, canonical_webhook_selector};

/// istioctl applies tag webhooks with this field manager; using it too means a later
/// `istioctl tag set --overwrite` (or this tool after istioctl) never meets a conflict.
pub const TAG_FIELD_MANAGER: &str = "istio-ci";
const KIND_TAG: &str = "tag-move";
const KIND_LABEL: &str = "namespace-relabel";

pub struct RepointTag(pub Arc<Env>);
pub struct RestoreTag(pub Arc<Env>);
pub struct TagPointsAt(pub Arc<Env>);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    Tag,
    Label,
}

pub fn mode_of(raw: Option<String>) -> Result<Mode, StepError> {
    match raw.as_deref() {
        None | Some("tag") => Ok(Mode::Tag),
        Some("label") => Ok(Mode::Label),
        Some(other) => Err(StepError::msg(format!(
            "injection mode {other:?} is not one of tag, label"
        ))),
    }
}

fn webhooks(env: &Env) -> Api<MutatingWebhookConfiguration> {
    Api::all(env.kube.clone())
}

/// The revision a tag points at now, if the tag exists.
pub async fn current_tag_revision(env: &Env, tag: &str) -> Result<Option<String>, StepError> {
    let name = tag_webhook_name(tag, ISTIO_NAMESPACE);
    let wh = webhooks(env)
        .get_opt(&name)
        .await
        .map_err(|e| kube_err(format!("reading MutatingWebhookConfiguration {name}"), e))?;
    Ok(wh.as_ref().and_then(tag_revision))
}

/// Server-side applies the tag webhook for `tag` → `revision`.
pub async fn apply_tag(env: &Env, tag: &str, revision: &str) -> Result<(), StepError> {
    let selector = canonical_webhook_selector(revision);
    let canon = webhooks(env)
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| kube_err(format!("listing injector webhooks ({selector})"), e))?;
    let canonical = match canon.items.as_slice() {
        [one] => one,
        [] => {
            return Err(StepError::msg(format!(
                "cannot point tag {tag:?} at {revision}: no injector webhook of {revision} exists \
                 ({selector}); is the {revision} control plane installed?"
            )));
        }
        many => {
            return Err(StepError::msg(format!(
                "cannot point tag {tag:?} at {revision}: {} injector webhooks match {selector}",
                many.len()
            )));
        }
    };
    let rendered = render_tag_webhook(tag, revision, canonical, ISTIO_NAMESPACE)
        .map_err(|e| StepError::msg(e.to_string()))?;
    let name = tag_webhook_name(tag, ISTIO_NAMESPACE);
    let mut body = serde_json::to_value(&rendered)
        .map_err(|e| StepError::with_source("serializing the tag webhook", e))?;
    body["apiVersion"] = json!("admissionregistration.k8s.io/v1");
    body["kind"] = json!("MutatingWebhookConfiguration");
    webhooks(env)
        .patch(
            &name,
            &PatchParams::apply(TAG_FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
        .map_err(|e| kube_err(format!("applying MutatingWebhookConfiguration {name}"), e))?;
    Ok(())
}

fn namespaces(env: &Env) -> Api<Namespace> {
    Api::all(env.kube.clone())
}

pub(super) async fn set_namespace_rev(
    env: &Env,
    ns: &str,
    revision: &str,
) -> Result<(), StepError> {
    let patch = json!({ "metadata": { "labels": { REV_LABEL: revision } } });
    namespaces(env)
        .patch(ns, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| kube_err(format!("relabelling namespace {ns}"), e))?;
    Ok(())
}

#[async_trait]
impl Action for RepointTag {
    async fn run(&self, ctx: &ActionCtx) -> Result<ActionOutcome, StepError> {
        let source: String = ctx.input("source")?;
        let target: String = ctx.input("target")?;
        match mode_of(ctx.input_opt("mode")?)? {
            Mode::Tag => {
                let tag: String = ctx.input("tag")?;
                move_tag(&self.0, ctx, &tag, &source, &target).await
            }
            // Label mode relabels wave by wave, each wave's namespaces just before its
            // restart (the canary step's, then the restart step's): nothing moves here.
            Mode::Label => Ok(ActionOutcome::already_done(
                outputs([("namespaces", json!([]))]),
                format!(
                    "label mode: namespaces are relabelled {REV_LABEL}={target} wave by wave, before each wave's restart (from {source})"
                ),
            )),
        }
    }
}

async fn move_tag(
    env: &Env,
    ctx: &ActionCtx,
    tag: &str,
    from: &str,
    to: &str,
) -> Result<ActionOutcome, StepError> {
    let name = tag_webhook_name(tag, ISTIO_NAMESPACE);
    let now = current_tag_revision(env, tag).await?;
    let out = outputs([
        ("tag", json!(tag)),
        ("webhook", json!(name)),
        ("previous", json!(now)),
    ]);
    if now.as_deref() == Some(to) {
        let mine = ctx.journal.find(KIND_TAG, &name);
        if let Some(e) = mine.as_ref().filter(|e| !e.is_done()) {
            ctx.journal.done(EntryId(e.seq), None).await?;
            return Ok(ActionOutcome::done(out));
        }
        // Done only if this run did it: its own move, or the canary it adopted (whose tags
        // its rollback restores). A move nobody journaled would never be put back.
        if mine.is_none() && super::adoption::adoption(&ctx.journal.all()).is_none() {
            return Err(StepError::refused(format!(
                "tag {tag} already points at {to}, but this run did not move it (someone else did, by hand or with another tool): nothing was changed; point the tag back at {from} and resume, or roll back"
            )));
        }
        return Ok(ActionOutcome::already_done(
            out,
            format!("tag {tag} already points at {to}"),
        ));
    }
    if now.is_none() {
        ctx.events.warn(format!(
            "tag {tag} does not exist yet: creating {name}; namespaces must be labelled istio.io/rev={tag} to use it"
        ));
    } else if now.as_deref() != Some(from) {
        ctx.events.warn(format!(
            "tag {tag} pointed at {}, not the source {from}; moving it to {to} anyway",
            now.as_deref().unwrap_or("?")
        ));
    }
    let id = ctx
        .journal
        .intent(
            KIND_TAG,
            &name,
            json!({ "tag": tag, "from": now, "to": to }),
        )
        .await?;
    apply_tag(env, tag, to).await?;
    ctx.journal.done(id, None).await?;
    ctx.events.info(format!("tag {tag} now points at {to}"));
    Ok(ActionOutcome::done(out))
}

/// The journal kind of a relabelling of a set of namespaces (the canary's, a label-mode
/// wave's, the canary's tag label given back): one entry, before the first patch.
pub const KIND_RELABEL_SET: &str = "namespaces-relabel";

/// Labels `namespaces` `istio.io/rev=<to>` (they were `<from>`), journaled as one entry named
/// `name` in this step: a resumed step finishes an entry in flight and repeats none that is
/// done. `extra` goes into the entry's details (the wave, the restart step's wave plan).
pub async fn relabel_set(
    env: &Env,
    ctx: &ActionCtx,
    name: &str,
    namespaces: &[String],
    from: &str,
    to: &str,
    extra: serde_json::Map<String, serde_json::Value>,
) -> Result<(), StepError> {
    let earlier = ctx
        .journal
        .step_entries()
        .into_iter()
        .rev()
        .find(|e| e.kind == KIND_RELABEL_SET && e.target == name);
    let id = match earlier {
        Some(e) if e.is_done() => return Ok(()),
        Some(e) => EntryId(e.seq),
        None if namespaces.is_empty() => return Ok(()),
        None => {
            let mut details = json!({ "from": from, "to": to, "namespaces": namespaces });
            for (k, v) in extra {
                details[k] = v;
            }
            ctx.journal.intent(KIND_RELABEL_SET, name, details).await?
        }
    };
    for ns in namespaces {
        set_namespace_rev(env, ns, to).await?;
    }
    ctx.journal.done(id, None).await?;
    ctx.events.info(format!(
        "{} labelled {REV_LABEL}={to} (was {from})",
        super::first_few(namespaces, 8, "namespaces")
    ));
    Ok(())
}

/// Each namespace this run relabelled, with the label it had before the run's first change
/// to it (the rollback puts exactly that back), in the order first relabelled.
pub fn original_labels(
    journal: &[asm_canary_engine::JournalEntry],
    source: &str,
) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut note = |ns: &str, from: Option<&str>| {
        if !out.iter().any(|(n, _)| n == ns) {
            out.push((ns.to_string(), from.unwrap_or(source).to_string()));
        }
    };
    for e in journal {
        let from = e.details["from"].as_str();
        if e.kind == KIND_LABEL {
            note(&e.target, from);
        } else if e.kind == KIND_RELABEL_SET {
            for ns in e.details["namespaces"].as_array().into_iter().flatten() {
                if let Some(ns) = ns.as_str() {
                    note(ns, from);
                }
            }
        }
    }
    out
}

#[async_trait]
impl Action for RestoreTag {
    async fn run(&self, ctx: &ActionCtx) -> Result<ActionOutcome, StepError> {
        let source: String = ctx.input("source")?;
        let journal = ctx.journal.all();
        let tag_moves: Vec<_> = journal.iter().filter(|e| e.kind == KIND_TAG).collect();
        let labels = original_labels(&journal, &source);
        let adopted = super::adoption::adoption(&journal);
        if tag_moves.is_empty() && labels.is_empty() && adopted.is_none() {
            return Ok(ActionOutcome::skipped(
                "this run did not move the tag or relabel any namespace",
            ));
        }
        let mut restored = Vec::new();
        for e in tag_moves.iter().take(1) {
            // The first move says where the tag pointed before this run.
            let tag = e.details["tag"].as_str().unwrap_or_default().to_string();
            let previous = e.details["from"].as_str().map(str::to_string);
            let back_to = previous.unwrap_or_else(|| source.clone());
            if current_tag_revision(&self.0, &tag).await?.as_deref() == Some(back_to.as_str()) {
                continue;
            }
            let name = tag_webhook_name(&tag, ISTIO_NAMESPACE);
            let id = ctx
                .journal
                .intent("tag-restore", &name, json!({ "tag": tag, "to": back_to }))
                .await?;
            apply_tag(&self.0, &tag, &back_to).await?;
            ctx.journal.done(id, None).await?;
            ctx.events
                .info(format!("tag {tag} points at {back_to} again"));
            restored.push(name);
        }
        if !labels.is_empty() {
            let id = ctx
                .journal
                .intent(
                    "namespaces-restore",
                    "namespaces",
                    json!({ "labels": labels.iter().map(|(ns, l)| json!({ "namespace": ns, "to": l })).collect::<Vec<_>>() }),
                )
                .await?;
            for (ns, back) in &labels {
                set_namespace_rev(&self.0, ns, back).await?;
                restored.push(format!("namespace/{ns}"));
            }
            ctx.journal.done(id, None).await?;
            ctx.events.info(format!(
                "{} labelled as before the run again",
                super::first_few(
                    labels
                        .iter()
                        .map(|(ns, l)| format!("{ns} ({REV_LABEL}={l})")),
                    8,
                    "namespaces"
                )
            ));
        }
        // A canary this run adopted: every tag and label still on it goes back to the older.
        if let Some(a) = adopted {
            let label_to = label_back_to(&self.0, ctx, &a.older, &a.newer).await?;
            restored.extend(tags_back(&self.0, ctx, &a.older, &a.newer, &label_to).await?);
        }
        Ok(ActionOutcome::done(outputs([(
            "restored",
            json!(restored),
        )])))
    }
}

#[async_trait]
impl Gate for TagPointsAt {
    async fn wait_for_change(&self, ctx: &mut GateCtx) {
        super::wake_on_change(ctx, webhooks(&self.0)).await
    }

    async fn check(&self, ctx: &mut GateCtx) -> Result<GateStatus, StepError> {
        let revision: String = ctx.input("revision")?;
        match mode_of(ctx.input_opt("mode")?)? {
            Mode::Tag => {
                let tag: String = ctx.input("tag")?;
                Ok(match current_tag_revision(&self.0, &tag).await? {
                    Some(r) if r == revision => GateStatus::Passed {
                        detail: Some(format!("tag {tag} → istiod-{revision}")),
                    },
                    Some(r) => GateStatus::waiting(format!(
                        "tag {tag} still points at {r}, not {revision}"
                    )),
                    None => GateStatus::waiting(format!("tag {tag} does not exist")),
                })
            }
            Mode::Label => {
                let wanted: Vec<String> = ctx
                    .outputs
                    .get("namespaces")
                    .cloned()
                    .map(serde_json::from_value)
                    .transpose()
                    .map_err(|e| StepError::with_source("reading the relabelled namespaces", e))?
                    .unwrap_or_default();
                let mut wrong = BTreeMap::new();
                for ns in &wanted {
                    let labels = namespaces(&self.0)
                        .get(ns)
                        .await
                        .map_err(|e| kube_err(format!("reading namespace {ns}"), e))?
                        .metadata
                        .labels
                        .unwrap_or_default();
                    let rev = labels.get(REV_LABEL).cloned().unwrap_or_default();
                    if rev != revision {
                        wrong.insert(ns.clone(), rev);
                    }
                }
                Ok(if wrong.is_empty() {
                    GateStatus::passed()
                } else {
                    GateStatus::waiting(format!(
                        "namespaces not yet labelled {REV_LABEL}={revision}: {}",
                        wrong.keys().cloned().collect::<Vec<_>>().join(", ")
                    ))
                })
            }
        }
    }
}

/// Points every tag webhook on `newer` back at `older` and relabels every namespace labelled
/// with `newer` to `label_to` (the older revision, or a tag on it), each journaled first;
/// what was moved.
pub async fn tags_back(
    env: &Env,
    ctx: &ActionCtx,
    older: &str,
    newer: &str,
    label_to: &str,
) -> Result<Vec<String>, StepError> {
    let mut moved = Vec::new();
    for tag in super::adoption::tags_pointing_at(env, newer).await? {
        let name = crate::istio::tag_webhook_name(&tag, ISTIO_NAMESPACE);
        let id = ctx
            .journal
            .intent("tag-restore", &name, json!({ "tag": tag, "to": older }))
            .await?;
        apply_tag(env, &tag, older).await?;
        ctx.journal.done(id, None).await?;
        ctx.events.info(format!(
            "tag {tag} points at {older} again (it was on {newer})"
        ));
        moved.push(name);
    }
    let sel = format!("{REV_LABEL}={newer}");
    let nss = Api::<Namespace>::all(env.kube.clone())
        .list(&ListParams::default().labels(&sel))
        .await
        .map_err(|e| kube_err(format!("listing namespaces {sel}"), e))?;
    for ns in nss.items.into_iter().filter_map(|n| n.metadata.name) {
        let id = ctx
            .journal
            .intent("namespace-restore", &ns, json!({ "to": label_to }))
            .await?;
        set_namespace_rev(env, &ns, label_to).await?;
        ctx.journal.done(id, None).await?;
        moved.push(format!("namespace/{ns}"));
    }
    Ok(moved)
}

/// What a namespace labelled with an adopted canary is labelled with once it is consolidated or
/// rolled back: in tag mode the run's tag, when it points at the older revision (then it moves
/// with the tag again, as tag mode asks, and a next run does not meet it labelled with the
/// source revision itself); else the older revision.
pub(super) async fn label_back_to(
    env: &Env,
    ctx: &ActionCtx,
    older: &str,
    canary: &str,
) -> Result<String, StepError> {
    let mode = mode_of(ctx.input_opt("mode")?)?;
    let tag: Option<String> = ctx.input_opt("tag")?;
    if let (Mode::Tag, Some(tag)) = (mode, tag) {
        // A tag on the canary is moved back onto the older first.
        let on = current_tag_revision(env, &tag).await?;
        if on.as_deref() == Some(older) || on.as_deref() == Some(canary) {
            return Ok(tag);
        }
    }
    Ok(older.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use asm_canary_engine::{EntryStatus, JournalEntry, Phase};

    fn mk_entry(seq: u64, kind: &str, target: &str, details: serde_json::Value) -> JournalEntry {
        JournalEntry {
            seq,
            step: "s".into(),
            phase: Phase::Forward,
            attempt: 1,
            kind: kind.into(),
            target: target.into(),
            details,
            status: EntryStatus::Intent,
            result: None,
            recorded_at: chrono::Utc::now(),
            done_at: None,
        }
    }

    /// The rollback restores the label a namespace had before the run, not the one of its
    /// last relabel: the canary namespace relabelled prod → target, then target → prod (its
    /// tag label back), goes back to prod; a label-mode wave goes back to the source.
    #[test]
    fn original_labels_are_those_before_the_runs_first_relabel() {
        let journal = [
            mk_entry(
                1,
                KIND_RELABEL_SET,
                "canary",
                json!({ "from": "prod", "to": "asm-1-29", "namespaces": ["frontend"] }),
            ),
            mk_entry(
                2,
                KIND_RELABEL_SET,
                "wave-2",
                json!({ "from": "asm-1-27", "to": "asm-1-29", "namespaces": ["orders", "payments"] }),
            ),
            mk_entry(
                3,
                KIND_RELABEL_SET,
                "canary-back",
                json!({ "from": "asm-1-29", "to": "prod", "namespaces": ["frontend"] }),
            ),
            mk_entry(4, KIND_LABEL, "legacy", json!({ "to": "asm-1-29" })),
        ];
        assert_eq!(
            original_labels(&journal, "asm-1-27"),
            vec![
                ("frontend".to_string(), "prod".to_string()),
                ("orders".to_string(), "asm-1-27".to_string()),
                ("payments".to_string(), "asm-1-27".to_string()),
                ("legacy".to_string(), "asm-1-27".to_string()),
            ]
        );
    }
}
