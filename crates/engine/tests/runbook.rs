//! Runbook loading: the canary runbook loads; every validation error names file:line:column.

mod common;

use asm_canary_engine::*;
use common::Fakes;

/// The action and gate names `runbooks/asm-canary-upgrade.yaml` uses: the canary steps must
/// register exactly these.
pub const CANARY_ACTIONS: &[&str] = &[
    "analysis-scope",
    "canary-wave",
    "complete-upgrade",
    "consolidate-canary",
    "copy-shared-configmap",
    "delete-target-configmap",
    "get-upgrades",
    "preflight",
    "promote-canary",
    "reconcile-mesh",
    "remove-canary",
    "repoint-tag",
    "restart-back",
    "restart-workloads",
    "restore-tag",
    "start-canary",
    "verify-proxies",
];
pub const CANARY_GATES: &[&str] = &[
    "analysis",
    "cluster-ready",
    "configmap-copied",
    "control-planes-ready",
    "proxies-synced",
    "single-revision",
    "tag-points-at",
    "target-available",
    "workloads-on-revision",
];

fn canary_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../runbooks/asm-canary-upgrade.yaml")
}

#[test]
fn canary_runbook_loads_against_its_action_and_gate_names() {
    let reg = Registry::stubs(CANARY_ACTIONS.iter().copied(), CANARY_GATES.iter().copied());
    let rb = Runbook::load(&canary_path(), &reg).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rb.name, "asm-canary-upgrade");
    let ids: Vec<&str> = rb.steps.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "preflight",
            "reconcile",
            "consolidate",
            "get-upgrades",
            "copy-configmap",
            "start",
            "canary",
            "promote",
            "repoint-tag",
            "restart",
            "verify",
            "analysis",
            "complete"
        ]
    );
    assert_eq!(rb.action_names(), CANARY_ACTIONS);
    assert_eq!(rb.gate_names(), CANARY_GATES);
    let complete = rb.step("complete").unwrap();
    assert_eq!(complete.approval, ApprovalMode::Required);
    assert_eq!(complete.on_failure, OnFailure::Halt);
    assert_eq!(rb.step("restart").unwrap().on_failure, OnFailure::Rollback);
    assert_eq!(rb.step("canary").unwrap().on_failure, OnFailure::Rollback);
    assert_eq!(rb.step("promote").unwrap().approval, ApprovalMode::Required);
    assert_eq!(
        rb.step("verify").unwrap().gate.as_ref().unwrap().stable_for,
        DurationSpec::Param("soak".into())
    );
    assert_eq!(rb.rollback.len(), 5);
    let params = rb.bind_params(&Default::default()).unwrap();
    assert_eq!(params["tag"], "prod");
    assert_eq!(params["soak"], "2m");
    assert!(params["to"].is_null());
    assert_eq!(
        rb.summary
            .iter()
            .map(|(k, _)| k.as_str())
            .collect::<Vec<_>>(),
        ["source", "target"]
    );
}

#[test]
fn canary_runbook_without_a_gate_registered_is_refused_at_its_position() {
    let gates: Vec<&str> = CANARY_GATES
        .iter()
        .copied()
        .filter(|g| *g != "proxies-synced")
        .collect();
    let reg = Registry::stubs(CANARY_ACTIONS.iter().copied(), gates);
    let err = Runbook::load(&canary_path(), &reg).unwrap_err();
    let text = err.to_string();
    assert_eq!(err.problems().len(), 2, "{text}");
    assert!(text.contains("asm-canary-upgrade.yaml:"), "{text}");
    assert!(text.contains("unknown gate \"proxies-synced\""), "{text}");
}

fn problems(yaml: &str) -> Vec<(u32, u32, String)> {
    let fakes = Fakes::new();
    match Runbook::parse(yaml, "rb.yaml", &fakes.registry()) {
        Ok(_) => panic!("runbook should be refused"),
        Err(e) => {
            let rendered = e.to_string();
            for p in e.problems() {
                assert!(
                    rendered.contains(&format!("rb.yaml:{}:{}: ", p.pos.line, p.pos.column)),
                    "{rendered}"
                );
            }
            e.problems()
                .iter()
                .map(|p| (p.pos.line, p.pos.column, p.message.clone()))
                .collect()
        }
    }
}

const HEAD: &str = "apiVersion: asm-canary.runbook/v1\nname: t\n";

#[test]
fn unknown_action_and_gate_point_at_the_names() {
    let p = problems(&format!(
        "{HEAD}steps:\n  - id: a\n    action: nope\n    gate: {{ check: nogate, timeout: 1m }}\n"
    ));
    assert_eq!(p.len(), 2, "{p:?}");
    assert_eq!((p[0].0, p[0].1), (5, 13));
    assert!(
        p[0].2
            .contains("unknown action \"nope\" (known: echo, effect, skip, undo)"),
        "{p:?}"
    );
    assert_eq!((p[1].0, p[1].1), (6, 20));
    assert!(p[1].2.contains("unknown gate \"nogate\""), "{p:?}");
}

#[test]
fn unknown_param_and_forward_and_unknown_step_references() {
    let p = problems(&format!(
        "{HEAD}params:\n  tag: {{ type: string, default: prod }}\nsteps:\n  - id: a\n    action: echo\n    inputs:\n      x: ${{params.tga}}\n      y: ${{steps.b.outputs.v}}\n      z: \"pre-${{steps.zz.outputs.v}}\"\n  - id: b\n    action: echo\n    inputs:\n      w: ${{steps.a.outputs}}\n"
    ));
    assert_eq!(p.len(), 3, "{p:?}");
    assert_eq!((p[0].0, p[0].1), (9, 10));
    assert!(
        p[0].2
            .contains("${params.tga} names an unknown param (declared: tag)"),
        "{p:?}"
    );
    assert_eq!(p[1].0, 10);
    assert!(
        p[1].2.contains("refers to step \"b\", which runs later"),
        "{p:?}"
    );
    assert_eq!(p[2].0, 11);
    assert!(
        p[2].2
            .contains("${steps.zz.outputs.v} names an unknown step"),
        "{p:?}"
    );
}

#[test]
fn a_step_cannot_use_its_own_outputs_in_inputs_but_its_gate_can() {
    let p = problems(&format!(
        "{HEAD}steps:\n  - id: a\n    action: echo\n    inputs: {{ x: \"${{steps.a.outputs.v}}\" }}\n    gate: {{ check: scripted, timeout: 1m, inputs: {{ v: \"${{steps.a.outputs.v}}\" }} }}\n"
    ));
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].0, 6);
}

#[test]
fn duplicate_ids_across_sequences_name_the_first() {
    let p = problems(&format!(
        "{HEAD}steps:\n  - id: a\n    action: echo\n  - id: a\n    action: echo\nrollback:\n  - id: a\n    action: undo\n"
    ));
    assert_eq!(p.len(), 2, "{p:?}");
    assert_eq!((p[0].0, p[0].1), (6, 9));
    assert!(
        p[0].2
            .contains("duplicate step id \"a\" (first defined at line 4, column 9)"),
        "{p:?}"
    );
    assert_eq!(p[1].0, 9);
}

#[test]
fn bad_durations_are_refused_where_written() {
    let p = problems(&format!(
        "{HEAD}params:\n  n: {{ type: integer, default: 3 }}\nsteps:\n  - id: a\n    action: echo\n    gate:\n      check: scripted\n      timeout: 10x\n      poll_interval: 0s\n      stable_for: ${{params.n}}\n  - id: b\n    action: echo\n    gate: {{ check: scripted, timeout: 1m, stable_for: 2m }}\n"
    ));
    assert_eq!(p.len(), 4, "{p:?}");
    assert_eq!((p[0].0, p[0].1), (10, 16));
    assert!(
        p[0].2.contains("gate timeout: bad duration \"10x\""),
        "{p:?}"
    );
    assert_eq!(p[1].0, 11);
    assert!(
        p[1].2.contains("poll_interval must be more than 0s"),
        "{p:?}"
    );
    assert_eq!(p[2].0, 12);
    assert!(
        p[2].2
            .contains("param \"n\" has type integer, not duration"),
        "{p:?}"
    );
    assert_eq!(p[3].0, 15);
    assert!(
        p[3].2
            .contains("stable_for must be shorter than its timeout"),
        "{p:?}"
    );
}

#[test]
fn bad_enums_types_and_rollback_rules() {
    let p = problems(&format!(
        "{HEAD}params:\n  x: {{ type: float }}\n  y: {{ type: integer, default: abc }}\nsteps:\n  - id: a\n    action: echo\n    approval: maybe\n    on_failure: retry\nrollback:\n  - id: r\n    action: undo\n    approval: required\n    on_failure: halt\n"
    ));
    let msgs: Vec<&str> = p.iter().map(|x| x.2.as_str()).collect();
    assert_eq!(p.len(), 6, "{msgs:#?}");
    assert!(msgs[0].contains("unknown type \"float\""));
    assert!(msgs[1].contains("default \"abc\" is not an integer"));
    assert!(msgs[2].contains("approval \"maybe\""));
    assert!(msgs[3].contains("on_failure \"retry\""));
    assert!(msgs[4].contains("rollback steps cannot require approval"));
    assert!(msgs[5].contains("on_failure has no meaning in the rollback sequence"));
}

#[test]
fn yaml_syntax_and_unknown_fields_have_positions() {
    let p = problems(&format!("{HEAD}steps:\n  - id: a\n    acton: echo\n"));
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].0 >= 4, "{p:?}");
    assert!(p[0].2.contains("acton"), "{p:?}");

    let p = problems(&format!("{HEAD}steps:\n  - id: a\n    action: [echo\n"));
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].0 >= 5, "{p:?}");

    let p = problems("apiVersion: other/v9\nname: t\nsteps:\n  - id: a\n    action: echo\n");
    assert_eq!((p[0].0, p[0].1), (1, 13));
    assert!(p[0].2.contains("apiVersion \"other/v9\" is not supported"));
}

#[test]
fn rollback_steps_may_read_any_forward_step() {
    let fakes = Fakes::new();
    let yaml = format!(
        "{HEAD}steps:\n  - id: a\n    action: echo\n  - id: b\n    action: echo\nrollback:\n  - id: r\n    action: undo\n    inputs: {{ x: \"${{steps.b.outputs.v}}\" }}\n  - id: r2\n    action: undo\n    inputs: {{ x: \"${{steps.r.outputs.v}}\" }}\n"
    );
    Runbook::parse(&yaml, "rb.yaml", &fakes.registry()).unwrap();
}

#[test]
fn bind_params_converts_strings_and_refuses_unknown_and_bad_values() {
    let fakes = Fakes::new();
    let yaml = format!(
        "{HEAD}params:\n  n: {{ type: integer, default: 1 }}\n  on: {{ type: boolean, default: false }}\n  ns: {{ type: string_list, default: [] }}\n  d: {{ type: duration, default: 1m }}\n  to: {{ type: string, required: true }}\nsteps:\n  - id: a\n    action: echo\n"
    );
    let rb = Runbook::parse(&yaml, "rb.yaml", &fakes.registry()).unwrap();
    let given =
        serde_json::json!({"n": "7", "on": "true", "ns": "a, b", "d": "1h30m", "to": "asm-1-28"});
    let p = rb.bind_params(given.as_object().unwrap()).unwrap();
    assert_eq!(
        serde_json::Value::Object(p),
        serde_json::json!({"n": 7, "on": true, "ns": ["a", "b"], "d": "1h30m", "to": "asm-1-28"})
    );
    let err = rb
        .bind_params(serde_json::json!({"n": "x", "zz": 1}).as_object().unwrap())
        .unwrap_err();
    assert!(err.contains("unknown param \"zz\""), "{err}");
    assert!(
        err.contains("param \"n\": \"x\" is not an integer"),
        "{err}"
    );
    assert!(err.contains("param \"to\" is required"), "{err}");
}

#[test]
fn approve_before_must_name_an_earlier_step_of_a_step_that_requires_approval() {
    let yaml = r#"apiVersion: asm-canary.runbook/v1
name: t
steps:
  - id: a
    action: effect
    approval: required
    approve_before: b
  - id: b
    action: effect
    approve_before: a
"#;
    let p = problems(yaml);
    assert_eq!(p.len(), 2, "{p:?}");
    assert_eq!((p[0].0, p[0].1), (7, 21));
    assert!(
        p[0].2
            .contains("approve_before \"b\" must name an earlier step"),
        "{p:?}"
    );
    assert_eq!((p[1].0, p[1].1), (10, 21));
    assert!(p[1].2.contains("needs approval: required"), "{p:?}");
}

#[test]
fn integer_params_out_of_range_are_refused_naming_the_param_and_range() {
    let fakes = Fakes::new();
    let yaml = format!(
        "{HEAD}params:\n  par: {{ type: integer, default: 4, min: 1, max: 100 }}\n  n: {{ type: integer, default: 3 }}\nsteps:\n  - id: a\n    action: echo\n"
    );
    let rb = Runbook::parse(&yaml, "rb.yaml", &fakes.registry()).unwrap();
    for (given, want) in [
        (
            serde_json::json!({"par": "0"}),
            "param \"par\": 0 is out of range: allowed 1..=100",
        ),
        (
            serde_json::json!({"par": -1}),
            "param \"par\": -1 is out of range: allowed 1..=100",
        ),
        (
            serde_json::json!({"par": 18446744073709551615u64}),
            "param \"par\": 18446744073709551615 is out of range: allowed 1..=100",
        ),
        (
            serde_json::json!({"n": "9223372036854775807"}),
            "param \"n\": 9223372036854775807 is out of range: allowed 0..=1000000",
        ),
    ] {
        let err = rb.bind_params(given.as_object().unwrap()).unwrap_err();
        assert!(err.contains(want), "{err}");
    }
    let ok = rb
        .bind_params(serde_json::json!({"par": "100"}).as_object().unwrap())
        .unwrap();
    assert_eq!(ok["par"], serde_json::json!(100));
}

/// Parallelism is a number or a share of a wave: `count_or_percent` takes a bounded count or
/// a percentage from 1% to 100%, and nothing else.
#[test]
fn count_or_percent_params_take_a_bounded_count_or_a_percentage() {
    let fakes = Fakes::new();
    let yaml = format!(
        "{HEAD}params:\n  par: {{ type: count_or_percent, default: 50%, min: 1, max: 100 }}\nsteps:\n  - id: a\n    action: echo\n"
    );
    let rb = Runbook::parse(&yaml, "rb.yaml", &fakes.registry()).unwrap();
    let bind = |v: serde_json::Value| {
        rb.bind_params(serde_json::json!({ "par": v }).as_object().unwrap())
            .map(|m| m["par"].clone())
    };
    assert_eq!(rb.bind_params(&Default::default()).unwrap()["par"], "50%");
    assert_eq!(bind("25%".into()).unwrap(), "25%");
    assert_eq!(bind(" 100 % ".into()).unwrap(), "100%");
    assert_eq!(bind("8".into()).unwrap(), 8);
    assert_eq!(bind(8.into()).unwrap(), 8);
    for bad in ["0%", "101%", "x%", "-5%", "abc"] {
        assert!(bind(bad.into()).is_err(), "{bad}");
    }
    let err = bind("0".into()).unwrap_err();
    assert!(err.contains("0 is out of range: allowed 1..=100"), "{err}");
}

/// `object_list` takes a list of objects, or its JSON from a command line, and nothing else.
#[test]
fn object_list_params_take_a_list_of_objects_or_its_json() {
    let fakes = Fakes::new();
    let yaml = format!(
        "{HEAD}params:\n  checks: {{ type: object_list, default: [] }}\nsteps:\n  - id: a\n    action: echo\n"
    );
    let rb = Runbook::parse(&yaml, "rb.yaml", &fakes.registry()).unwrap();
    let bind = |v: serde_json::Value| {
        rb.bind_params(serde_json::json!({ "checks": v }).as_object().unwrap())
            .map(|m| m["checks"].clone())
    };
    assert_eq!(
        rb.bind_params(&Default::default()).unwrap()["checks"],
        serde_json::json!([])
    );
    let one = serde_json::json!([{"name": "x", "max": 1}]);
    assert_eq!(bind(one.clone()).unwrap(), one);
    assert_eq!(bind(one.to_string().into()).unwrap(), one);
    for bad in [
        serde_json::json!("x"),
        serde_json::json!("{\"name\": \"x\"}"),
        serde_json::json!(["a"]),
        serde_json::json!(3),
    ] {
        let err = bind(bad.clone()).unwrap_err();
        assert!(err.contains("list of objects"), "{bad}: {err}");
    }
}

#[test]
fn integer_bounds_are_checked_where_written() {
    let p = problems(&format!(
        "{HEAD}params:\n  a: {{ type: integer, default: 50, min: 1, max: 10 }}\n  b: {{ type: integer, min: 5, max: 2 }}\n  c: {{ type: string, min: 1 }}\nsteps:\n  - id: a\n    action: echo\n"
    ));
    let msgs: Vec<&str> = p.iter().map(|(_, _, m)| m.as_str()).collect();
    assert!(
        msgs.iter()
            .any(|m| m.contains("param \"a\": default 50 is out of range: allowed 1..=10")),
        "{p:?}"
    );
    assert!(
        msgs.iter()
            .any(|m| m.contains("param \"b\": min 5 is greater than max 2")),
        "{p:?}"
    );
    assert!(
        msgs.iter().any(|m| m.contains(
            "param \"c\": min and max apply to integer, count_or_percent and duration params only"
        )),
        "{p:?}"
    );
}

/// `--param verify_timeout=0s` was taken: every gate timed out at once, the rollback's too,
/// and the cluster stayed on two revisions. A duration param's `min`/`max` (durations) bound
/// what it takes; a bound that is no duration is a problem at its line.
#[test]
fn duration_params_out_of_their_min_and_max_are_refused() {
    let fakes = Fakes::new();
    let yaml = format!(
        "{HEAD}params:\n  t: {{ type: duration, default: 10m, min: 1s }}\n  s: {{ type: duration, default: 1s, min: 100ms, max: 1h }}\nsteps:\n  - id: a\n    action: echo\n"
    );
    let rb = Runbook::parse(&yaml, "rb.yaml", &fakes.registry()).unwrap();
    let bind = |k: &str, v: &str| rb.bind_params(serde_json::json!({ k: v }).as_object().unwrap());
    let err = bind("t", "0s").unwrap_err();
    assert!(
        err.contains("param \"t\": 0s is shorter than the minimum, 1s"),
        "{err}"
    );
    let err = bind("s", "2h").unwrap_err();
    assert!(
        err.contains("2h is out of range: allowed 100ms..=1h"),
        "{err}"
    );
    assert!(bind("t", "1s").is_ok());
    assert!(bind("s", "100ms").is_ok());
    let p = problems(&format!(
        "{HEAD}params:\n  t: {{ type: duration, min: 5 }}\n  u: {{ type: string, min: 1s }}\nsteps:\n  - id: a\n    action: echo\n"
    ));
    assert_eq!(p.len(), 2, "{p:?}");
    assert!(p[0].2.contains("durations such as 1s"), "{p:?}");
    assert!(
        p[1].2
            .contains("integer, count_or_percent and duration params only"),
        "{p:?}"
    );
}

/// `Runbook::parse_params` reads the params alone (no registry: the steps' actions are not
/// looked up) and binds values exactly as the whole runbook does: the CLI checks `--param`
/// and a fleet file's settings with it before connecting.
#[test]
fn the_params_alone_bind_as_the_whole_runbook_does() {
    let yaml = format!(
        "{HEAD}params:\n  t: {{ type: duration, default: 10m, min: 1s }}\n  n: {{ type: integer, default: 3, min: 1, max: 5 }}\nsteps:\n  - id: a\n    action: no-such-action\n"
    );
    let rb = Runbook::parse_params(&yaml, "rb.yaml").unwrap();
    assert!(rb.steps.is_empty());
    let bind = |v: serde_json::Value| rb.bind_params(v.as_object().unwrap());
    assert_eq!(bind(serde_json::json!({})).unwrap()["n"], 3);
    let err = bind(serde_json::json!({"n": 9, "x": 1})).unwrap_err();
    assert!(err.contains("unknown param \"x\""), "{err}");
    assert!(
        err.contains("param \"n\": 9 is out of range: allowed 1..=5"),
        "{err}"
    );
    let err = bind(serde_json::json!({"t": "0s"})).unwrap_err();
    assert!(err.contains("shorter than the minimum"), "{err}");
    let bad = format!("{HEAD}params:\n  t: {{ type: nope }}\nsteps: []\n");
    assert!(Runbook::parse_params(&bad, "rb.yaml").is_err());
}
