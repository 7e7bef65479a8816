//! JSON Lines: one [`EventRecord`] per line (`schema`, `ts`, `run_id`, `event`, then the event's
//! fields), flushed after each line so a pipeline sees events as they happen.

use std::io::Write;
use std::sync::Mutex;

use asm_canary_engine::{EventRecord, EventSink};

/// Writes each event as one JSON object on its own line.
pub struct JsonLines<W: Write + Send> {
    out: Mutex<W>,
}

impl JsonLines<std::io::Stdout> {
    pub fn stdout() -> Self {
        JsonLines::new(std::io::stdout())
    }
}

impl<W: Write + Send> JsonLines<W> {
    pub fn new(out: W) -> Self {
        JsonLines {
            out: Mutex::new(out),
        }
    }

    /// The writer back (tests).
    pub fn into_inner(self) -> W {
        match self.out.into_inner() {
            Ok(w) => w,
            Err(p) => p.into_inner(),
        }
    }
}

/// One event as its JSON line (without the newline).
pub fn to_line(record: &EventRecord) -> String {
    // Serializing these types cannot fail (string keys, no non-finite floats); fall back to a
    // minimal object rather than panic.
    serde_json::to_string(record).unwrap_or_else(|e| {
        format!(
            r#"{{"schema":{:?},"ts":{:?},"run_id":{:?},"event":"message","level":"warn","text":"unserializable event: {e}"}}"#,
            record.schema,
            record.ts.to_rfc3339(),
            record.run_id
        )
    })
}

impl<W: Write + Send> EventSink for JsonLines<W> {
    fn emit(&self, record: &EventRecord) {
        let line = to_line(record);
        if let Ok(mut out) = self.out.lock() {
            // A closed stdout (e.g. `| head`) must not stop the run: the checkpoint is the record.
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use asm_canary_engine::{Event, Outcome};
    use chrono::TimeZone;

    #[test]
    fn one_object_per_line_with_the_envelope_and_run_finished_last() {
        let sink = JsonLines::new(Vec::new());
        let ts = chrono::Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let mut summary = serde_json::Map::new();
        summary.insert("source".into(), "asm-1-27".into());
        summary.insert("target".into(), "asm-1-28".into());
        for event in [
            Event::StepStarted {
                step: "start".into(),
                phase: asm_canary_engine::Phase::Forward,
                attempt: 1,
                description: None,
            },
            Event::RunFinished {
                outcome: Outcome::Completed,
                reason: None,
                exit_code: 0,
                summary,
            },
        ] {
            sink.emit(&EventRecord {
                schema: asm_canary_engine::EVENTS_SCHEMA.into(),
                ts,
                run_id: "r1".into(),
                event,
            });
        }
        let text = String::from_utf8(sink.into_inner()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                r#"{"schema":"asm-canary.events/1.1","ts":"2026-01-01T00:00:00Z","run_id":"r1","event":"step_started","step":"start","phase":"forward","attempt":1}"#,
                r#"{"schema":"asm-canary.events/1.1","ts":"2026-01-01T00:00:00Z","run_id":"r1","event":"run_finished","outcome":"completed","exit_code":0,"source":"asm-1-27","target":"asm-1-28"}"#,
            ]
        );
    }
}
