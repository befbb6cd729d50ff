//! The console's HTML (pure): whole pages for a first load, and the fragments an event stream
//! replaces in place ([`super::events`]). Server-rendered, so a page shows the truth without
//! its script; the script (`assets/console.js`) only swaps fragments, updates values and ages,
//! and draws the sparklines.
//!
//! Times are rendered as `<time data-ts="ms">HH:MM:SS UTC</time>`: the text does not change
//! while the time does not, so a fragment is resent only when its content changed, and the
//! script shows local time and age from `data-ts`.

use std::fmt::Write as _;

use super::history::{self, Point as ChartPoint};
use super::log::LogLine;
use super::view::{Device, DeviceState, Link, Overview};
use crate::queue::rejected::{self, ByReason};
use crate::queue::summary::bytes;
use crate::queue::{reason, CommandRecord};
use crate::sample::Value;

/// The pages, in the navigation's order: (path, title).
pub const PAGES: [(&str, &str); 4] = [
    ("/", "Overview"),
    ("/devices", "Devices"),
    ("/commands", "Commands"),
    ("/log", "Log"),
];

/// `text` safe inside HTML text and attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `HH:MM:SS` of a wall-clock time, UTC.
pub fn clock(ts_ms: i64) -> String {
    let s = ts_ms.div_euclid(1000).rem_euclid(86_400);
    format!("{:02}:{:02}:{:02}", s / 3600, s % 3600 / 60, s % 60)
}

fn time(ts_ms: i64) -> String {
    format!("<time data-ts=\"{ts_ms}\">{} UTC</time>", clock(ts_ms))
}

/// A value as a person reads it: integers whole, floats to at most 4 decimals (6 significant
/// digits for small ones), strings as they are.
pub fn value_text(value: &Value) -> String {
    match value {
        Value::Float(f) => {
            let magnitude = f.abs();
            if magnitude != 0.0 && !(1e-4..1e12).contains(&magnitude) {
                return format!("{f:e}");
            }
            let decimals = if magnitude < 1.0 { 6 } else { 4 };
            let text = format!("{f:.decimals$}");
            let text = text.trim_end_matches('0').trim_end_matches('.');
            if text == "-0" {
                "0".to_owned()
            } else {
                text.to_owned()
            }
        }
        Value::Str(s) => s.to_string(),
        other => other.to_json(),
    }
}

/// A whole page around `main`.
pub fn page(path: &str, gateway_id: &str, main: &str) -> String {
    let title = PAGES
        .iter()
        .find(|(p, _)| *p == path)
        .map_or("fieldrelay", |(_, t)| t);
    let version = env!("CARGO_PKG_VERSION");
    let mut nav = String::new();
    for (href, name) in PAGES {
        let current = if href == path {
            " aria-current=\"page\""
        } else {
            ""
        };
        let _ = write!(nav, "<a href=\"{href}\"{current}>{name}</a>");
    }
    let id = esc(gateway_id);
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{title} · {id} · fieldrelay</title><link rel=\"icon\" href=\"data:,\">\
         <link rel=\"stylesheet\" href=\"/assets/console.css?v={version}\">\
         <script src=\"/assets/console.js?v={version}\" defer></script></head>\
         <body data-page=\"{path}\"><header><strong>fieldrelay</strong> <span class=\"gw\">{id}</span>\
         <nav>{nav}</nav><span id=\"live\" class=\"live\" title=\"live updates\">static</span></header>\
         <main>{main}</main></body></html>\n"
    )
}

/// The overview's body.
pub fn overview(view: &Overview, chart_points: &[ChartPoint]) -> String {
    format!(
        "<div id=\"overview-cards\" class=\"cards\">{}</div>\
         <section class=\"card wide\"><h2>Queue, last hour</h2><div id=\"chart\">{}</div></section>",
        overview_cards(view),
        chart(chart_points, view.now_ms)
    )
}

/// The overview's figures (replaced by the event stream when they change).
pub fn overview_cards(view: &Overview) -> String {
    let mut out = String::with_capacity(2048);
    let (online, devices) = view.devices_online;
    let _ = write!(
        out,
        "<section class=\"card\"><h2>Gateway</h2><dl><dt>id</dt><dd>{}</dd>\
         <dt>version</dt><dd>{}</dd><dt>up since</dt><dd>{}</dd>\
         <dt>devices online</dt><dd id=\"devices-online\">{online} of {devices}</dd></dl></section>",
        esc(&view.gateway_id),
        view.version,
        time(view.started_ms),
    );
    let (class, word) = match &view.link {
        Link::Connected => ("ok", "connected"),
        Link::Connecting => ("warn", "connecting"),
        Link::Retrying(_) => ("bad", "retrying"),
    };
    let _ = write!(
        out,
        "<section class=\"card\"><h2>Uplink</h2><p><span id=\"uplink-state\" class=\"pill {class}\">{word}</span></p>\
         <dl><dt>broker</dt><dd>{}</dd><dt>in flight</dt><dd>{}</dd>",
        esc(&view.broker),
        view.inflight
    );
    if let Link::Retrying(retrying) = &view.link {
        let _ = write!(
            out,
            "<dt>last error</dt><dd id=\"uplink-error\" class=\"err\">{}</dd><dt>failed at</dt><dd>{}</dd>",
            esc(&retrying.error),
            time(retrying.failed_ms)
        );
        if let Some(next) = retrying.next_attempt_ms {
            let _ = write!(
                out,
                "<dt>failed attempts</dt><dd id=\"uplink-attempts\">{}</dd>\
                 <dt>next attempt</dt><dd id=\"uplink-next\">{}</dd>",
                retrying.attempt,
                time(next)
            );
        }
    }
    out.push_str("</dl></section>");
    let oldest = view.oldest_ts_ms.map_or("none".to_owned(), time);
    let _ = write!(
        out,
        "<section class=\"card\"><h2>Queue</h2><dl><dt>rows waiting</dt><dd id=\"queue-depth\">{}</dd>\
         <dt>on disk</dt><dd id=\"queue-bytes\">{} of {}</dd>\
         <dt>oldest unsent</dt><dd id=\"queue-oldest\">{oldest}</dd></dl></section>",
        view.depth,
        bytes(view.bytes),
        bytes(view.capacity),
    );
    out.push_str("<section class=\"card\"><h2>Dropped</h2><dl id=\"drops\">");
    for (reason, count) in view.drops {
        let class = if count > 0 { " class=\"err\"" } else { "" };
        let _ = write!(
            out,
            "<dt>{}</dt><dd{class}>{count}</dd>",
            reason.replace('_', " ")
        );
    }
    out.push_str("</dl></section>");
    rejected_card(&mut out, &view.rejected);
    out
}

/// The rows the broker refused for good, per reason, and what to do: only when there are some
/// (nothing sends them again by itself, so an operator must see them).
fn rejected_card(out: &mut String, held: &ByReason) {
    let total = rejected::total(held);
    if total == 0 {
        return;
    }
    let _ = write!(
        out,
        "<section id=\"rejected\" class=\"card wide\"><h2>Rejected by the broker \
         <small>not sent again by themselves</small></h2>\
         <p><span id=\"rejected-rows\" class=\"pill bad\">{total} {}</span></p><dl>",
        if total == 1 { "row" } else { "rows" }
    );
    for (code, rows) in held {
        let _ = write!(
            out,
            "<dt>{}</dt><dd class=\"err\" data-reason=\"{}\">{rows}</dd>",
            esc(&reason::label(*code)),
            esc(&reason::name(*code)),
        );
    }
    let causes: Vec<String> = held.keys().map(|code| cause(*code)).collect();
    let _ = write!(
        out,
        "</dl><p class=\"note\">{}</p><ol class=\"note\">\
         <li>Keep them: <code>fieldrelay queue export --rejected</code></li>\
         <li>Fix the cause on the broker (its ACL for this gateway, the topic, its size limit).</li>\
         <li>With the gateway stopped: <code>fieldrelay queue requeue-rejected</code>, then start it.</li>\
         </ol><p class=\"note\">Left alone, they are the first rows evicted when the queue is full.</p>\
         </section>",
        causes.join(" ")
    );
}

/// What a reason usually means for the plant's integrator.
fn cause(code: u8) -> String {
    let what = match code {
        0x87 => "the broker's ACL does not let this gateway publish on the topic",
        0x90 => "the broker refuses the topic name (check uplink.topic_prefix)",
        0x95 => "the message is larger than the broker's Maximum Packet Size",
        0x99 => "the broker refuses the payload format",
        0x9a => "the broker does not take retained messages",
        0x9b => "the broker does not take the point's QoS",
        _ => "the broker refused the message",
    };
    format!("{}: {what}.", esc(&reason::name(code)))
}

/// Chart size (SVG user units).
const CHART_W: f64 = 720.0;
const CHART_H: f64 = 180.0;
const PAD: f64 = 28.0;

/// The queue depth (left scale) and deliveries per second (right scale) over the last hour,
/// ending at `now_ms`.
pub fn chart(points: &[ChartPoint], now_ms: i64) -> String {
    let span = (history::SLOTS as i64) * (history::PERIOD.as_millis() as i64);
    let start = now_ms - span;
    let max_depth = points.iter().map(|p| p.depth).max().unwrap_or(0).max(1) as f64;
    let max_rate = points
        .iter()
        .map(|p| p.delivered_per_s)
        .fold(0.0, f64::max)
        .max(1.0);
    let x = |ts: i64| PAD + (ts - start).max(0) as f64 / span as f64 * (CHART_W - 2.0 * PAD);
    let y = |v: f64, max: f64| CHART_H - PAD - v / max * (CHART_H - 2.0 * PAD);
    let line = |value: &dyn Fn(&ChartPoint) -> f64, max: f64| {
        points
            .iter()
            .filter(|p| p.ts_ms >= start)
            .map(|p| format!("{:.1},{:.1}", x(p.ts_ms), y(value(p), max)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let depth = line(&|p| p.depth as f64, max_depth);
    let rate = line(&|p| p.delivered_per_s, max_rate);
    // The newest point of each line as a dot: a line needs two points, a fresh gateway has one.
    let dots = points.last().map_or(String::new(), |p| {
        format!(
            "<circle class=\"depth\" cx=\"{0:.1}\" cy=\"{1:.1}\" r=\"3\"/>\
             <circle class=\"rate\" cx=\"{0:.1}\" cy=\"{2:.1}\" r=\"3\"/>",
            x(p.ts_ms),
            y(p.depth as f64, max_depth),
            y(p.delivered_per_s, max_rate)
        )
    });
    let (left, right, bottom) = (PAD, CHART_W - PAD, CHART_H - PAD);
    format!(
        "<svg class=\"chart\" viewBox=\"0 0 {CHART_W} {CHART_H}\" role=\"img\" \
         aria-label=\"queue depth and deliveries per second, last hour\">\
         <line class=\"axis\" x1=\"{left}\" y1=\"{bottom}\" x2=\"{right}\" y2=\"{bottom}\"/>\
         <line class=\"grid\" x1=\"{left}\" y1=\"{PAD}\" x2=\"{right}\" y2=\"{PAD}\"/>\
         <polyline class=\"depth\" points=\"{depth}\"/><polyline class=\"rate\" points=\"{rate}\"/>{dots}\
         <text class=\"depth\" x=\"{left}\" y=\"{}\">{} rows</text>\
         <text class=\"rate\" x=\"{right}\" y=\"{}\" text-anchor=\"end\">{:.1} delivered/s</text>\
         <text x=\"{left}\" y=\"{}\">−60 min</text><text x=\"{right}\" y=\"{}\" text-anchor=\"end\">now</text>\
         </svg>",
        PAD - 8.0,
        max_depth as u64,
        PAD - 8.0,
        max_rate,
        CHART_H - 8.0,
        CHART_H - 8.0,
    )
}

/// The devices page's body.
pub fn devices(devices: &[Device]) -> String {
    let points: usize = devices.iter().map(|d| d.points.len()).sum();
    let mut out = String::with_capacity(512 + points * 320);
    if devices.is_empty() {
        out.push_str("<p>No devices are configured.</p>");
    }
    for (index, device) in devices.iter().enumerate() {
        let _ = write!(
            out,
            "<section class=\"card wide device\" data-name=\"{}\"><h2>{} <small>bus {}</small></h2>\
             <div class=\"health\" id=\"health-{index}\">{}</div>\
             <table><thead><tr><th>point</th><th class=\"num\">value</th><th>unit</th><th>time</th>\
             <th>age</th><th>recent</th></tr></thead><tbody>",
            esc(&device.name),
            esc(&device.name),
            esc(&device.bus),
            device_health(device),
        );
        for point in &device.points {
            let (value, ts, history) = match &point.value {
                Some(v) => (
                    esc(&value_text(&v.value)),
                    time(v.ts_ms),
                    v.history
                        .iter()
                        .map(|h| h.to_string())
                        .collect::<Vec<_>>()
                        .join(","),
                ),
                None => ("—".to_owned(), String::new(), String::new()),
            };
            let _ = write!(
                out,
                "<tr data-d=\"{}\" data-p=\"{}\"><td>{}</td><td class=\"v num\">{value}</td><td>{}</td>\
                 <td class=\"ts\">{ts}</td><td class=\"age\"></td><td class=\"spark\" data-h=\"{history}\"></td></tr>",
                esc(&device.name),
                esc(&point.name),
                esc(&point.name),
                esc(point.unit.as_deref().unwrap_or("")),
            );
        }
        out.push_str("</tbody></table></section>");
    }
    out
}

/// A device's state, last error and counters (replaced by the event stream when they change).
pub fn device_health(device: &Device) -> String {
    let class = match device.state {
        DeviceState::Online => "ok",
        DeviceState::Pending | DeviceState::Failing(_) => "warn",
        DeviceState::Offline => "bad",
    };
    let mut out = format!(
        "<span class=\"pill {class}\" data-state=\"{0}\">{0}</span>",
        device.state.word()
    );
    if device.consecutive_failures > 0 {
        let _ = write!(
            out,
            " <span>{} failed polls in a row</span>",
            device.consecutive_failures
        );
    }
    let c = &device.counters;
    if c.last_success_ms > 0 {
        let _ = write!(
            out,
            " <span>last success {}</span>",
            time(c.last_success_ms)
        );
    }
    if let Some(error) = &device.last_error {
        let _ = write!(
            out,
            " <span class=\"err\">last error: {}</span>",
            esc(error)
        );
    }
    let _ = write!(
        out,
        "<div class=\"counters\">requests {} · timeouts {} · errors {} · exceptions {} · \
         crc errors {} · stale replies {} · decode errors {}</div>",
        c.requests,
        c.timeouts,
        c.errors,
        c.exceptions,
        c.crc_errors,
        c.stale_replies,
        c.decode_errors
    );
    out
}

/// The commands page's body.
pub fn commands(rows: &Result<Vec<CommandRecord>, String>) -> String {
    format!(
        "<section class=\"card wide\"><h2>Recent commands</h2><p class=\"note\">Commands with an id, \
         newest first (the gateway remembers them for a week to answer redeliveries).</p>\
         <table><thead><tr><th>time</th><th>origin</th><th>device / point</th><th>id</th>\
         <th class=\"num\">value</th><th>result</th></tr></thead><tbody id=\"commands-rows\">{}</tbody></table></section>",
        command_rows(rows)
    )
}

/// The rows of the commands table (replaced by the event stream when they change).
pub fn command_rows(rows: &Result<Vec<CommandRecord>, String>) -> String {
    let rows = match rows {
        Ok(rows) if rows.is_empty() => {
            return "<tr><td colspan=\"6\">No commands yet.</td></tr>".to_owned()
        }
        Ok(rows) => rows,
        Err(error) => {
            return format!(
                "<tr><td colspan=\"6\" class=\"err\">cannot read the queue: {}</td></tr>",
                esc(error)
            )
        }
    };
    let mut out = String::new();
    for row in rows {
        let result: Option<serde_json::Value> = row
            .result
            .as_deref()
            .and_then(|r| serde_json::from_str(r).ok());
        let value = result
            .as_ref()
            .and_then(|r| r.get("value"))
            .map_or(String::new(), |v| esc(&v.to_string()));
        let outcome = match &result {
            None => "<span class=\"pill warn\">writing</span>".to_owned(),
            Some(r) if r.get("ok") == Some(&serde_json::Value::Bool(true)) => {
                "<span class=\"pill ok\">ok</span>".to_owned()
            }
            Some(r) => format!(
                "<span class=\"pill bad\">{}</span> {}",
                esc(r.get("error").and_then(|e| e.as_str()).unwrap_or("failed")),
                esc(r.get("message").and_then(|m| m.as_str()).unwrap_or(""))
            ),
        };
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{} / {}</td><td>{}</td><td class=\"num\">{value}</td><td>{outcome}</td></tr>",
            time(row.ts_ms),
            esc(&row.origin),
            esc(&row.device),
            esc(&row.point),
            esc(&row.id),
        );
    }
    out
}

/// The log page's body.
pub fn log(lines: &[LogLine]) -> String {
    format!(
        "<section class=\"card wide\"><h2>Log</h2><p class=\"note\">The last {} lines at info and \
         above, newest last.</p><ol id=\"log-lines\" class=\"log\">{}</ol></section>",
        super::log::LINES,
        log_lines(lines)
    )
}

/// Log lines as list items (appended by the event stream).
pub fn log_lines(lines: &[LogLine]) -> String {
    let mut out = String::new();
    for line in lines {
        let level = line.level.as_str().to_ascii_lowercase();
        let _ = write!(
            out,
            "<li class=\"{level}\" data-seq=\"{}\">{} <b>{}</b> <span class=\"target\">{}</span> {}</li>",
            line.seq,
            time(line.ts_ms),
            line.level,
            esc(&line.target),
            esc(&line.text)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::values::PointValue;
    use crate::console::view::Point;
    use crate::modbus::CounterSnapshot;
    use crate::uplink::Retrying;

    fn overview_view(link: Link) -> Overview {
        Overview {
            gateway_id: "gw<1>".into(),
            version: "0.1.0",
            started_ms: 1_000,
            now_ms: 61_000,
            broker: "127.0.0.1:1883".into(),
            link,
            depth: 42,
            bytes: 4096,
            capacity: 1 << 30,
            oldest_ts_ms: Some(31_000),
            drops: [
                ("capacity", 0),
                ("expired", 3),
                ("commit_failed", 0),
                ("live_channel_full", 0),
                ("live_discarded", 0),
            ],
            rejected: ByReason::new(),
            devices_online: (1, 2),
            inflight: 0,
        }
    }

    #[test]
    fn escapes_and_formats() {
        assert_eq!(
            esc("<a href='x'>&\"</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;"
        );
        assert_eq!(clock(0), "00:00:00");
        assert_eq!(clock(1_764_000_061_999), "16:01:01");
        for (value, text) in [
            (Value::Float(21.500000000000004), "21.5"),
            (Value::Float(-0.00001234), "-1.234e-5"),
            (Value::Float(0.125), "0.125"),
            (Value::Float(-0.0), "0"),
            (Value::Float(3.0), "3"),
            (Value::Int(-7), "-7"),
            (Value::Bool(true), "true"),
            (Value::Str("A<B".into()), "A<B"),
        ] {
            assert_eq!(value_text(&value), text, "{value:?}");
        }
    }

    #[test]
    fn overview_shows_the_link_and_the_queue() {
        let connected = overview_cards(&overview_view(Link::Connected));
        assert!(connected.contains("<span id=\"uplink-state\" class=\"pill ok\">connected</span>"));
        assert!(connected.contains("<dd id=\"queue-depth\">42</dd>"));
        assert!(
            connected.contains(
                "<dd id=\"queue-oldest\"><time data-ts=\"31000\">00:00:31 UTC</time></dd>"
            ),
            "{connected}"
        );
        assert!(connected.contains("<dt>expired</dt><dd class=\"err\">3</dd>"));
        assert!(connected.contains("gw&lt;1&gt;"));
        assert!(!connected.contains("uplink-error"));
        assert!(
            !connected.contains("id=\"rejected\""),
            "no card without rejected rows"
        );
        let retrying = overview_cards(&overview_view(Link::Retrying(Retrying {
            error: "connection refused".into(),
            failed_ms: 50_000,
            next_attempt_ms: Some(62_000),
            attempt: 4,
        })));
        assert!(retrying.contains("class=\"pill bad\">retrying</span>"));
        assert!(retrying.contains("<dd id=\"uplink-error\" class=\"err\">connection refused</dd>"));
        assert!(retrying
            .contains("<dd id=\"uplink-next\"><time data-ts=\"62000\">00:01:02 UTC</time></dd>"));
        assert!(retrying.contains("<dd id=\"uplink-attempts\">4</dd>"));
        let page = page("/", "gw", &overview(&overview_view(Link::Connecting), &[]));
        assert!(page.contains("<a href=\"/\" aria-current=\"page\">Overview</a>"));
        assert!(page.contains(">connecting</span>"));
    }

    #[test]
    fn rejected_rows_show_per_reason_with_what_to_do() {
        let mut view = overview_view(Link::Connected);
        view.rejected = ByReason::from([(0x87, 120), (0xa5, 1)]);
        let html = overview_cards(&view);
        assert!(
            html.contains("<span id=\"rejected-rows\" class=\"pill bad\">121 rows</span>"),
            "{html}"
        );
        assert!(html.contains("<dt>not_authorized (0x87)</dt><dd class=\"err\" data-reason=\"not_authorized\">120</dd>"), "{html}");
        assert!(html.contains("<dt>0xa5</dt><dd class=\"err\" data-reason=\"0xa5\">1</dd>"));
        assert!(html.contains("not_authorized: the broker's ACL does not let"));
        assert!(html.contains("<code>fieldrelay queue export --rejected</code>"));
        assert!(html
            .contains("With the gateway stopped: <code>fieldrelay queue requeue-rejected</code>"));
        view.rejected = ByReason::from([(0x95, 1)]);
        assert!(overview_cards(&view).contains(">1 row</span>"));
    }

    #[test]
    fn the_chart_spans_the_last_hour() {
        let now = 10_000_000;
        let points = [
            ChartPoint {
                ts_ms: now - 3_600_000,
                depth: 0,
                delivered_per_s: 0.0,
            },
            ChartPoint {
                ts_ms: now,
                depth: 50,
                delivered_per_s: 2.0,
            },
        ];
        let svg = chart(&points, now);
        // Oldest at the left edge and bottom, newest at the right edge and top of its scale.
        assert!(svg.contains("points=\"28.0,152.0 692.0,28.0\""), "{svg}");
        assert!(svg.contains(">50 rows</text>"));
        assert!(svg.contains(">2.0 delivered/s</text>"));
        assert!(chart(&[], now).contains("points=\"\""));
    }

    #[test]
    fn devices_list_their_points_and_health() {
        let device = Device {
            name: "boiler".into(),
            bus: "plc1".into(),
            state: DeviceState::Offline,
            consecutive_failures: 3,
            last_error: Some("timed out after 1s".into()),
            counters: CounterSnapshot {
                requests: 9,
                timeouts: 3,
                last_success_ms: 5_000,
                ..Default::default()
            },
            points: vec![
                Point {
                    name: "temp".into(),
                    unit: Some("°C".into()),
                    value: Some(PointValue {
                        value: Value::Float(21.5),
                        ts_ms: 4_000,
                        version: 1,
                        history: vec![20.0, 21.5],
                    }),
                },
                Point {
                    name: "mode".into(),
                    unit: None,
                    value: None,
                },
            ],
        };
        let html = devices(std::slice::from_ref(&device));
        assert!(
            html.contains("<span class=\"pill bad\" data-state=\"offline\">offline</span>"),
            "{html}"
        );
        assert!(html.contains("last error: timed out after 1s"));
        assert!(html.contains("<tr data-d=\"boiler\" data-p=\"temp\"><td>temp</td><td class=\"v num\">21.5</td><td>°C</td>"));
        assert!(html.contains("data-h=\"20,21.5\""));
        assert!(html.contains("<td class=\"v num\">—</td>"));
        assert!(devices(&[]).contains("No devices"));
    }

    #[test]
    fn commands_show_results_and_refusals() {
        let record = |id: &str, result: Option<&str>| CommandRecord {
            origin: "cloud".into(),
            device: "boiler".into(),
            point: "setpoint".into(),
            id: id.into(),
            result: result.map(str::to_owned),
            ts_ms: 1_000,
        };
        let rows = Ok(vec![
            record("\"a\"", Some(r#"{"id":"a","ok":true,"value":21.5,"ts":1}"#)),
            record(
                "\"b\"",
                Some(
                    r#"{"id":"b","ok":false,"error":"out_of_range","message":"95 is above max 90","ts":1}"#,
                ),
            ),
            record("\"c\"", None),
        ]);
        let html = command_rows(&rows);
        assert!(
            html.contains("<td class=\"num\">21.5</td><td><span class=\"pill ok\">ok</span>"),
            "{html}"
        );
        assert!(html.contains("out_of_range</span> 95 is above max 90"));
        assert!(html.contains("writing"));
        assert!(command_rows(&Ok(vec![])).contains("No commands yet"));
        assert!(command_rows(&Err("locked".into())).contains("cannot read the queue: locked"));
    }
}
