use super::*;

const SUB: &str = "00000000-0000-0000-0000-000000000000";

/// A fleet file with one source and `stages` (indented list items) and `upgrade` appended.
fn mk_text(stages: &str, upgrade: &str) -> String {
    format!(
        "apiVersion: asm-canary.fleet/1\nclusters:\n  - subscription: {SUB}\nstages:\n{stages}{upgrade}"
    )
}

const CANARY: &str = "  - name: canary\n    selector: {tags: {ring: canary}}\n";

#[test]
fn a_full_file_loads_with_defaults_and_overrides() {
    let text = format!(
        "apiVersion: asm-canary.fleet/1
clusters:
  - subscription: {SUB}
    resource_group: rg-a
  - id: /subscriptions/{SUB}/resourceGroups/rg-b/providers/Microsoft.ContainerService/managedClusters/aks-1
  - {{subscription: {SUB}, resource_group: rg-c, name: aks-2}}
stages:
  - name: canary
    selector: {{names: [aks-1]}}
    after: {{soak: 10m, approval: true}}
  - name: prod-eu
    selector: {{tags: {{asm-canary/ring: prod}}}}
    max_concurrency: \"25%\"
    upgrade: {{target: asm-1-28, approve: [start]}}
upgrade:
  canary_namespaces: [payments]
  analysis: {{checks: checks.yaml}}
"
    );
    let f = FleetFile::parse(&text, "fleet.yaml").unwrap();
    assert_eq!(f.sources.len(), 3);
    assert!(f.sources[0].needs_discovery());
    assert_eq!(
        f.explicit_clusters()
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>(),
        ["aks-1", "aks-2"]
    );
    let canary = &f.stages[0];
    assert_eq!(canary.max_concurrency, Concurrency::Count(1));
    assert_eq!(canary.soak, Duration::from_secs(600));
    assert_eq!(
        canary.approval_environment("prod-eu").as_deref(),
        Some("asm-canary-prod-eu")
    );
    assert_eq!(canary.upgrade.target, Target::Newest);
    assert_eq!(canary.upgrade.approve, ["start", "complete"]);
    assert_eq!(canary.upgrade.canary_namespaces, ["payments"]);
    let prod = &f.stages[1];
    assert_eq!(prod.max_concurrency, Concurrency::Percent(25));
    assert_eq!(prod.upgrade.target, Target::Pinned("asm-1-28".into()));
    assert_eq!(prod.upgrade.approve, ["start"]);
    assert_eq!(
        prod.upgrade.upgrade_flags(),
        [
            "--to",
            "asm-1-28",
            "--canary-namespaces",
            "payments",
            "--analysis-checks",
            "checks.yaml",
            "--approve",
            "start"
        ]
    );
    let in_rg_a = ClusterId::new(SUB, "RG-A", "x").unwrap();
    let in_rg_z = ClusterId::new(SUB, "rg-z", "x").unwrap();
    assert!(f.covers(&in_rg_a));
    assert!(!f.covers(&in_rg_z));
}

/// Each class of bad input, the position it is reported at, and words of its message.
#[test]
fn every_problem_is_reported_at_its_line_and_column() {
    let two = |a: &str, b: &str| {
        mk_text(
            &format!(
                "  - name: {a}\n    selector: {{names: [x]}}\n  - name: {b}\n    selector: {{names: [y]}}\n"
            ),
            "",
        )
    };
    let conc = |c: &str| {
        mk_text(
            &format!("  - name: canary\n    selector: {{names: [x]}}\n    max_concurrency: {c}\n"),
            "",
        )
    };
    let cases: Vec<(&str, String, &str, &str)> = vec![
        ("unknown key", mk_text(CANARY, "upgrade:\n  tagret: newest\n"), "8:3", "tagret"),
        ("unknown key in a stage", mk_text("  - name: canary\n    selectr: {names: [x]}\n", ""), "6:5", "selectr"),
        ("duplicate stage", two("prod", "prod"), "7:11", "duplicate stage name \"prod\" (first at line 5, column 11)"),
        ("stage ids collide in Azure Pipelines", two("prod-eu", "Prod_eu"), "7:11", "same job id"),
        ("bad stage name", two("prod eu", "x"), "5:11", "letters, digits, '-' and '_'"),
        ("stage name starting with a digit", two("1st", "x"), "5:11", "starting with a letter"),
        ("zero percent", conc("\"0%\""), "7:22", "not a percentage from 1% to 100%"),
        ("150 percent", conc("\"150%\""), "7:22", "not a percentage from 1% to 100%"),
        ("not a number", conc("abc"), "7:22", "\"abc\""),
        ("zero concurrency", conc("0"), "7:22", "0 is not a whole number of at least 1"),
        ("fractional concurrency", conc("2.5"), "7:22", "2.5 is not a whole number"),
        ("negative concurrency", conc("-2"), "7:22", "not a whole number of at least 1"),
        ("bad soak", mk_text("  - name: canary\n    selector: {names: [x]}\n    after: {soak: 10 minutes}\n  - name: b\n    selector: {names: [y]}\n", ""), "7:19", "after.soak: bad duration"),
        ("pinned target not a revision", mk_text(CANARY, "upgrade:\n  target: 1.28\n"), "8:11", "write newest, or a revision name such as asm-1-28"),
        ("bad cluster id", "apiVersion: asm-canary.fleet/1\nclusters:\n  - id: /subscriptions/x/resourceGroups/rg\nstages:\n  - {name: a, selector: {names: [x]}}\n".to_string(), "3:9", "not a managed cluster id"),
        ("bad id in a selector", mk_text("  - name: canary\n    selector: {ids: [/subscriptions/abc]}\n", ""), "6:22", "ids:"),
        ("bad subscription", "apiVersion: asm-canary.fleet/1\nclusters:\n  - subscription: not-a-guid!\nstages:\n  - {name: a, selector: {names: [x]}}\n".to_string(), "3:19", "subscription"),
        ("no stages", "apiVersion: asm-canary.fleet/1\nclusters:\n  - subscription: 0000\n".to_string(), "1:1", "stages is missing"),
        ("empty stages", "apiVersion: asm-canary.fleet/1\nclusters:\n  - subscription: 0000\nstages: []\n".to_string(), "4:9", "at least one stage"),
        ("stage with no selector", mk_text("  - name: canary\n    max_concurrency: 2\n", ""), "5:5", "has no selector"),
        ("selector with two kinds", mk_text("  - name: canary\n    selector: {names: [x], tags: {a: b}}\n", ""), "6:15", "exactly one of tags, names or ids"),
        ("empty selector", mk_text("  - name: canary\n    selector: {tags: {}}\n", ""), "6:15", "the selector is empty"),
        ("approval after the last stage", mk_text("  - name: canary\n    selector: {names: [x]}\n    after: {approval: true}\n", ""), "7:23", "nothing to hold back"),
        ("unknown approval step", mk_text(CANARY, "upgrade:\n  approve: [start, finish]\n"), "8:20", "\"finish\" is not a step that asks for approval"),
        ("bad canary namespace", mk_text(CANARY, "upgrade:\n  canary_namespaces: [Payments]\n"), "8:23", "not a namespace name"),
        ("wrong apiVersion", "apiVersion: asm-canary.fleet/2\nclusters:\n  - subscription: 0000\nstages:\n  - {name: a, selector: {names: [x]}}\n".to_string(), "1:13", "not supported"),
        ("no clusters", "apiVersion: asm-canary.fleet/1\nstages:\n  - {name: a, selector: {names: [x]}}\n".to_string(), "1:1", "clusters is missing"),
        ("id and subscription both", "apiVersion: asm-canary.fleet/1\nclusters:\n  - {subscription: 0000, id: /subscriptions/0/resourceGroups/r/providers/Microsoft.ContainerService/managedClusters/a}\nstages:\n  - {name: a, selector: {names: [x]}}\n".to_string(), "3:30", "not both"),
        ("not YAML", "apiVersion: [\n".to_string(), "", ""),
    ];
    let mut wrong = Vec::new();
    for (what, text, at, needle) in cases {
        let err = match FleetFile::parse(&text, "fleet.yaml") {
            Ok(_) => {
                wrong.push(format!("{what}: accepted"));
                continue;
            }
            Err(e) => e.to_string(),
        };
        if at.is_empty() {
            assert!(err.starts_with("fleet.yaml:"), "{what}: {err}");
            continue;
        }
        match err
            .lines()
            .find(|l| l.starts_with(&format!("fleet.yaml:{at}: ")))
        {
            Some(line) if line.contains(needle) => {}
            _ => wrong.push(format!("{what}: expected {needle:?} at {at}, got: {err}")),
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn all_problems_are_reported_at_once_in_file_order() {
    let text = mk_text(
        "  - name: b@d\n    selector: {names: [x]}\n    max_concurrency: 0\n",
        "upgrade:\n  target: latest\n",
    );
    let err = FleetFile::parse(&text, "f.yaml").unwrap_err();
    let lines: Vec<u32> = err.problems().iter().map(|p| p.pos.line).collect();
    assert_eq!(lines, [5, 7, 9], "{err}");
    assert!(
        err.to_string()
            .starts_with("fleet file f.yaml has 3 problems:")
    );
}

/// `APPROVABLE_STEPS` is what the built-in runbook asks approval for: a step renamed there
/// must not leave the fleet file accepting a name no run would honour.
#[test]
fn approvable_steps_are_the_builtin_runbooks() {
    let rb: serde_json::Value =
        serde_saphyr::from_str(crate::cli::request::EMBEDDED_RUNBOOK).unwrap();
    let asking: Vec<&str> = rb["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["approval"] == "required")
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(asking, APPROVABLE_STEPS);
}
