//! Command metrics, labelled `origin` (`cloud`, `local`): what each command path's intake and
//! handler counted ([`CommandStats`]), read at scrape time.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;

use super::encode::{counter_families, family};
use crate::commands::CommandStats;

#[derive(Debug)]
pub struct CommandCollector {
    origins: Vec<Arc<CommandStats>>,
}

impl CommandCollector {
    pub fn new(origins: Vec<Arc<CommandStats>>) -> CommandCollector {
        CommandCollector { origins }
    }
}

/// A counter exported: name, help, and the field it reads.
type CounterField = (&'static str, &'static str, fn(&CommandStats) -> &AtomicU64);

const COUNTERS: [CounterField; 9] = [
    (
        "fieldrelay_commands_received",
        "PUBLISHes on a command topic taken by the intake",
        |s| &s.received,
    ),
    (
        "fieldrelay_commands_stored",
        "Commands committed to the command inbox (acknowledged to the broker then)",
        |s| &s.stored,
    ),
    (
        "fieldrelay_commands_redelivered",
        "Broker redeliveries (DUP) and retained copies of commands the inbox holds or whose id \
         was taken: acknowledged, not stored again",
        |s| &s.redelivered,
    ),
    (
        "fieldrelay_commands_busy",
        "Commands refused with busy because the command inbox was full",
        |s| &s.busy,
    ),
    (
        "fieldrelay_commands_retained",
        "Retained commands (delivered at subscribe) refused or dropped, never carried out",
        |s| &s.retained,
    ),
    (
        "fieldrelay_commands_oversized",
        "PUBLISHes too large to read, discarded unread (answered bad_payload on a command topic)",
        |s| &s.oversized,
    ),
    (
        "fieldrelay_commands_ignored",
        "PUBLISHes on a topic that names no command, acknowledged and dropped",
        |s| &s.ignored,
    ),
    (
        "fieldrelay_commands_answered",
        "Command answers committed (every result code, repeated stored answers included)",
        |s| &s.answered,
    ),
    (
        "fieldrelay_commands_bad_response_topic",
        "MQTT 5 Response Topics ignored as invalid (empty, a wildcard, too long); the command is \
         answered on its result topic only",
        |s| &s.bad_response_topic,
    ),
];

impl Collector for CommandCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let rows: Vec<([(&str, &str); 1], &CommandStats)> = self
            .origins
            .iter()
            .map(|s| ([("origin", s.origin)], s.as_ref()))
            .collect();
        family(
            &mut encoder,
            "fieldrelay_commands_waiting",
            "Commands waiting in the command inbox, as last seen",
            MetricType::Gauge,
            &rows,
            |metric, stats| {
                let waiting = i64::try_from(CommandStats::get(&stats.waiting)).unwrap_or(i64::MAX);
                metric.encode_gauge(&waiting)
            },
        )?;
        counter_families(&mut encoder, &COUNTERS, &rows, |field, stats| {
            CommandStats::get(field(stats))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    #[test]
    fn scrape_shows_every_counter_per_origin() {
        let cloud = Arc::new(CommandStats::new("cloud"));
        cloud.busy.store(3, std::sync::atomic::Ordering::Relaxed);
        let mut metrics = Metrics::new();
        metrics.add(CommandCollector::new(vec![
            cloud,
            Arc::new(CommandStats::new("local")),
        ]));
        let text = metrics.render().unwrap();
        assert!(
            text.contains("\nfieldrelay_commands_busy_total{origin=\"cloud\"} 3\n"),
            "{text}"
        );
        for (name, _, _) in COUNTERS {
            assert!(
                text.contains(&format!("\n{name}_total{{origin=\"local\"}} 0\n")),
                "{name}: {text}"
            );
        }
        assert!(text.contains("fieldrelay_commands_waiting{origin=\"cloud\"} 0"));
    }
}
