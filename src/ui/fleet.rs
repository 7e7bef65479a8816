//! What `fleet run` shows: the fleet's own events and each cluster's events, in one stream.
//! With `--output json`, JSON Lines on stdout (fleet events with schema
//! `asm-canary.fleet-events/1`; a cluster's events as `--output json` of `upgrade` writes them,
//! with `cluster` and `stage` added); as text, one line each on stderr, a cluster's prefixed by
//! its name. Every line also goes to the fleet's event log beside its checkpoint.

use std::io::Write;
use std::sync::{Arc, Mutex};

use asm_canary_engine::{Event, EventRecord, EventSink, Outcome};
use chrono::Utc;

use crate::contract::fleet::{
    ClusterStatus, FLEET_EVENTS_SCHEMA, FleetEvent, FleetEventRecord, FleetRunState,
};

/// The fleet's output: stdout (JSON or text on stderr) and the event log.
pub struct FleetOutput {
    json: bool,
    log: Option<Mutex<Box<dyn Write + Send>>>,
}

impl FleetOutput {
    pub fn new(json: bool, log: Option<Box<dyn Write + Send>>) -> Arc<Self> {
        Arc::new(FleetOutput {
            json,
            log: log.map(Mutex::new),
        })
    }

    fn write(&self, json_line: &str, text: Option<String>) {
        if let Some(log) = &self.log
            && let Ok(mut log) = log.lock()
        {
            let _ = writeln!(log, "{json_line}");
            let _ = log.flush();
        }
        if self.json {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{json_line}");
            let _ = out.flush();
        } else if let Some(text) = text {
            crate::say!("{text}");
        }
    }

    /// One of the fleet's own events.
    pub fn fleet_event(&self, fleet_run_id: &str, event: FleetEvent) {
        let text = fleet_line(&event);
        let record = FleetEventRecord {
            schema: FLEET_EVENTS_SCHEMA.to_string(),
            ts: Utc::now(),
            fleet_run_id: fleet_run_id.to_string(),
            event,
        };
        let line = serde_json::to_string(&record).unwrap_or_default();
        self.write(&line, Some(text));
    }

    /// The sink for one cluster's run: its events tagged with the cluster and stage.
    pub fn cluster_sink(
        self: &Arc<Self>,
        cluster: &str,
        short: &str,
        stage: &str,
    ) -> Arc<ClusterSink> {
        Arc::new(ClusterSink {
            out: self.clone(),
            cluster: cluster.to_string(),
            short: short.to_string(),
            stage: stage.to_string(),
            finished: Mutex::new(None),
        })
    }
}

/// One cluster's events into the fleet's output; remembers how its run finished.
pub struct ClusterSink {
    out: Arc<FleetOutput>,
    cluster: String,
    short: String,
    stage: String,
    finished: Mutex<Option<(Outcome, Option<String>)>>,
}

impl ClusterSink {
    /// The run's outcome and reason, from its `run_finished` event.
    pub fn finished(&self) -> Option<(Outcome, Option<String>)> {
        self.finished.lock().ok()?.clone()
    }
}

impl EventSink for ClusterSink {
    fn emit(&self, record: &EventRecord) {
        if let Event::RunFinished {
            outcome, reason, ..
        } = &record.event
            && let Ok(mut f) = self.finished.lock()
        {
            *f = Some((*outcome, reason.clone()));
        }
        let tagged = Tagged {
            record,
            cluster: &self.cluster,
            stage: &self.stage,
        };
        let line = serde_json::to_string(&tagged).unwrap_or_default();
        let text = super::text::line(&record.event, None).map(|l| format!("[{}] {l}", self.short));
        self.out.write(&line, text);
    }
}

/// A cluster's event as `--output json` of `upgrade` writes it, with its cluster and stage
/// after its own fields, serialized in one pass.
#[derive(serde::Serialize)]
struct Tagged<'a> {
    #[serde(flatten)]
    record: &'a EventRecord,
    cluster: &'a str,
    stage: &'a str,
}

fn short(id: &str) -> &str {
    id.rsplit('/').next().unwrap_or(id)
}

/// The text line of a fleet event.
pub fn fleet_line(event: &FleetEvent) -> String {
    match event {
        FleetEvent::FleetStarted {
            fleet_run_id,
            resumed,
            stages,
            clusters,
        } => format!(
            "{} fleet run {fleet_run_id}: {clusters} clusters, stages {}",
            if *resumed { "resuming" } else { "starting" },
            stages.join(" → ")
        ),
        FleetEvent::StageStarted {
            stage,
            clusters,
            max_concurrency,
        } => format!("== stage {stage}: {clusters} clusters, at most {max_concurrency} at once"),
        FleetEvent::ClusterStarted {
            cluster,
            run_id,
            resumed,
            ..
        } => format!(
            "[{}] {} (run {run_id})",
            short(cluster),
            if *resumed { "resuming" } else { "starting" }
        ),
        FleetEvent::ClusterFinished {
            cluster,
            status,
            reason,
            ..
        } => format!(
            "[{}] {}{}",
            short(cluster),
            status_word(*status),
            reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        ),
        FleetEvent::StageFinished { stage, ok } => {
            format!("== stage {stage} {}", if *ok { "done" } else { "stopped" })
        }
        FleetEvent::SoakStarted { stage, until } => {
            format!(
                "   soaking after stage {stage} until {}",
                until.format("%H:%M:%S UTC")
            )
        }
        FleetEvent::ApprovalAwaited {
            next_stage,
            approve,
            ..
        } => {
            format!("   stage {next_stage} waits for approval: run fleet run again with {approve}")
        }
        FleetEvent::Approved { stage, by } => {
            format!("   the stage after {stage} approved by {by}")
        }
        FleetEvent::FleetFinished {
            state,
            exit_code,
            reason,
        } => format!(
            "fleet {} (exit {exit_code}){}",
            match state {
                FleetRunState::Completed => "completed",
                FleetRunState::Halted => "halted",
                FleetRunState::Paused => "paused",
                FleetRunState::Running => "running",
            },
            reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        ),
    }
}

pub fn status_word(s: ClusterStatus) -> &'static str {
    match s {
        ClusterStatus::Pending => "pending",
        ClusterStatus::Running => "running",
        ClusterStatus::Completed => "completed",
        ClusterStatus::UpToDate => "up to date",
        ClusterStatus::Blocked => "blocked",
        ClusterStatus::RolledBack => "rolled back",
        ClusterStatus::Paused => "paused",
        ClusterStatus::Failed => "FAILED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use asm_canary_engine::events::Level;

    /// A `Write` whose bytes the test reads back.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_clusters_event_is_its_upgrade_event_with_cluster_and_stage_last() {
        let log = Shared::default();
        let out = FleetOutput::new(false, Some(Box::new(log.clone())));
        let sink = out.cluster_sink("/subscriptions/s/rg/aks-1", "aks-1", "canary");
        let record = EventRecord {
            schema: asm_canary_engine::events::EVENTS_SCHEMA.to_string(),
            ts: Utc::now(),
            run_id: "r-1".into(),
            event: Event::Message {
                step: Some("start".into()),
                level: Level::Info,
                text: "hello".into(),
            },
        };
        sink.emit(&record);
        let line = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
        let mut want = serde_json::to_value(&record).unwrap();
        let obj = want.as_object_mut().unwrap();
        obj.insert("cluster".into(), "/subscriptions/s/rg/aks-1".into());
        obj.insert("stage".into(), "canary".into());
        assert_eq!(line, format!("{want}\n"));
    }
}
