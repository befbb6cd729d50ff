//! Does a valid configuration fit its broker (`uplink.broker`)? Each documented limit of the
//! profile (`broker.rs` in this module) that the configuration would break is an error at the
//! key that breaks it, all at once, so `fieldrelay check` refuses what the broker would refuse
//! at run time — where a refusal is a closed connection (Azure, QoS 2), a PUBLISH never
//! acknowledged, or a reconnect loop.
//!
//! A value the user did not write (a default, a client id or topic prefix derived from
//! `gateway.id`) is reported at `uplink.broker`, with the key to set. The rules run only on a
//! configuration whose uplink and devices are valid: they need their resolved values.
//!
//! Limits the uplink obeys by itself are not errors: a `max_rate` above the broker's
//! publishes per second is capped (a warning says so), and so is the window when `max_inflight`
//! is not written.

use super::broker::{drain_rate_under, BrokerLimits};
use super::decode::Keys;
use super::device::DeviceConfig;
use super::error::Issue;
use super::path::KeyPath;
use super::sparkplug::UplinkProfile;
use super::units::format_duration;
use super::uplink::UplinkConfig;

/// Pushes an issue for every limit of `uplink.broker` the configuration breaks.
pub(crate) fn check_broker_fit(
    uplink: &UplinkConfig,
    keys: &Keys,
    devices: &[DeviceConfig],
    issues: &mut Vec<Issue>,
) {
    let limits = uplink.broker.limits();
    let fit = Fit {
        broker: uplink.broker.name(),
        limits,
        keys,
    };
    // A Sparkplug edge node publishes its data at QoS 0, never retained: a point's `qos` only
    // decides whether it is queued as history, and its topics are Sparkplug's own.
    if uplink.profile == UplinkProfile::Json {
        fit.points(devices, issues);
    }
    fit.topics(uplink, devices, issues);
    fit.connection(uplink, issues);
}

struct Fit<'a> {
    broker: &'static str,
    limits: BrokerLimits,
    keys: &'a Keys,
}

impl Fit<'_> {
    /// `key` of `uplink` if written there, else `uplink.broker` with a hint to set it.
    fn at(&self, key: &str) -> (KeyPath, String) {
        if self.keys.present.contains(key) {
            (self.keys.path_of(key), String::new())
        } else {
            let hint = format!(" (set uplink.{key})");
            (self.keys.path_of("broker"), hint)
        }
    }

    fn points(&self, devices: &[DeviceConfig], issues: &mut Vec<Issue>) {
        let (broker, limits) = (self.broker, &self.limits);
        for (d, device) in devices.iter().enumerate() {
            let device_path = KeyPath::root().key("devices").index(d);
            for (p, point) in device.points.iter().enumerate() {
                let path = device_path.key("points").index(p);
                let qos = point.qos as u8;
                if qos > limits.max_qos {
                    issues.push(Issue::value(
                        path.key("qos"),
                        format!("{broker} accepts at most qos {}, got {qos}", limits.max_qos),
                    ));
                }
                if point.retain && !limits.retain {
                    issues.push(Issue::value(
                        path.key("retain"),
                        format!("{broker} does not accept retained messages"),
                    ));
                }
            }
        }
    }

    /// The deepest and the longest topic the gateway publishes or subscribes to.
    fn topics(&self, uplink: &UplinkConfig, devices: &[DeviceConfig], issues: &mut Vec<Issue>) {
        let (broker, limits) = (self.broker, &self.limits);
        let (topics, (path, hint)) = match &uplink.profile {
            UplinkProfile::Json => (json_topics(uplink, devices), self.at("topic_prefix")),
            // The ids are required keys of `uplink.sparkplug` (or `gateway.id`).
            UplinkProfile::Sparkplug(sparkplug) => {
                let (g, e) = (&sparkplug.group_id, &sparkplug.edge_node_id);
                let topics = devices
                    .iter()
                    .map(|device| format!("spBv1.0/{g}/DDATA/{e}/{}", device.name))
                    .chain([format!("spBv1.0/{g}/NBIRTH/{e}")])
                    .collect();
                (topics, (self.keys.path_of("sparkplug"), String::new()))
            }
        };
        let levels = |topic: &&String| topic.split('/').count();
        let deepest = topics.iter().max_by_key(levels);
        let longest = topics.iter().max_by_key(|topic| topic.len());
        if let (Some(max), Some(topic)) = (limits.max_topic_levels, deepest) {
            let n = levels(&topic);
            if n > max {
                issues.push(Issue::value(
                    path.clone(),
                    format!("{broker} accepts topics of at most {max} levels, but {topic:?} has {n}{hint}"),
                ));
            }
        }
        if let (Some(max), Some(topic)) = (limits.max_topic_bytes, longest) {
            if topic.len() > max {
                issues.push(Issue::value(
                    path,
                    format!(
                        "{broker} accepts topics of at most {max} bytes, but {topic:?} has {}{hint}",
                        topic.len()
                    ),
                ));
            }
        }
    }

    fn connection(&self, uplink: &UplinkConfig, issues: &mut Vec<Issue>) {
        let (broker, limits) = (self.broker, &self.limits);
        if let Some(max) = limits.max_client_id {
            let n = uplink.client_id.chars().count();
            if n > max {
                let (path, hint) = self.at("client_id");
                issues.push(Issue::value(
                    path,
                    format!("{broker} accepts client ids of at most {max} characters, got {n} ({:?}){hint}", uplink.client_id),
                ));
            }
        }
        if let Some(max) = limits.max_keep_alive {
            if uplink.keep_alive > max {
                let (path, hint) = self.at("keep_alive");
                issues.push(Issue::value(
                    path,
                    format!(
                        "{broker} accepts a keep_alive of at most {}, got {}{hint}",
                        format_duration(max),
                        format_duration(uplink.keep_alive)
                    ),
                ));
            }
        }
        if let Some(max) = limits.max_inflight {
            if uplink.max_inflight > max && self.keys.present.contains("max_inflight") {
                issues.push(Issue::value(
                    self.keys.path_of("max_inflight"),
                    format!(
                        "{broker} accepts at most {max} unacknowledged publishes, got {}",
                        uplink.max_inflight
                    ),
                ));
            }
        }
        if let (Some(rate), Some(max)) = (uplink.max_rate, limits.publishes_per_s) {
            if rate > drain_rate_under(max) {
                issues.push(Issue::warning(
                    self.keys.path_of("max_rate"),
                    format!(
                        "{broker} accepts {max} publishes per second: the drain is capped at {}/s",
                        drain_rate_under(max)
                    ),
                ));
            }
        }
    }
}

/// The JSON profile's data topics; a writable point's results go one level deeper, to
/// `…/set/result`.
fn json_topics(uplink: &UplinkConfig, devices: &[DeviceConfig]) -> Vec<String> {
    let prefix = &uplink.topic_prefix;
    devices
        .iter()
        .flat_map(|device| {
            device.points.iter().map(move |point| {
                let topic = format!("{prefix}/{}/{}", device.name, point.name);
                match point.write {
                    Some(_) => format!("{topic}/set/result"),
                    None => topic,
                }
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::{errors, with};
    use crate::config::{load_str_with_warnings, Broker};

    fn uplink(lines: &str) -> Vec<String> {
        errors(&with(&[("  url: mqtt://broker.local\n", lines)]))
    }

    #[test]
    fn qos_2_and_a_deep_prefix_are_refused_on_aws_iot() {
        let text = with(&[
            (
                "  url: mqtt://broker.local\n",
                "  url: mqtt://b\n  broker: aws_iot\n  topic_prefix: a/b/c/d/e/f/g\n",
            ),
            ("        type: f32\n", "        type: f32\n        qos: 2\n"),
        ]);
        assert_eq!(
            errors(&text),
            [
                r#"7:17: uplink.topic_prefix: aws_iot accepts topics of at most 8 levels, but "a/b/c/d/e/f/g/boiler/temperature" has 9"#,
                "20:14: devices[0].points[0].qos: aws_iot accepts at most qos 1, got 2",
            ]
        );
        // The same file fits a generic broker.
        let generic = text.replace("broker: aws_iot", "broker: generic");
        assert!(crate::config::load_str(&generic, "c.yaml").is_ok());
    }

    #[test]
    fn a_sparkplug_edge_node_is_held_to_its_own_topics_not_the_json_ones() {
        let text = |group: &str| {
            with(&[
                (
                    "  url: mqtt://broker.local\n",
                    &format!(
                        "  url: mqtt://b\n  broker: aws_iot\n  topic_prefix: a/b/c/d/e/f/g\n  \
                         profile: sparkplug\n  sparkplug: {{group_id: {group}}}\n"
                    ),
                ),
                ("        type: f32\n", "        type: f32\n        qos: 2\n"),
            ])
        };
        // QoS 0 data and five-level topics: the deep prefix and `qos: 2` (history) are unused.
        let fits = text("plant1");
        assert!(
            crate::config::load_str(&fits, "c.yaml").is_ok(),
            "{:?}",
            errors(&fits)
        );
        let found = errors(&text(&"g".repeat(240)));
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(
            found[0].contains("uplink.sparkplug: aws_iot accepts topics of at most 256 bytes"),
            "{found:?}"
        );
    }

    #[test]
    fn connection_limits_name_the_key_or_the_broker() {
        assert_eq!(
            uplink("  url: mqtt://b\n  broker: azure_event_grid\n  keep_alive: 20m\n"),
            ["7:15: uplink.keep_alive: azure_event_grid accepts a keep_alive of at most 1160s, got 20m"]
        );
        assert_eq!(
            uplink("  url: mqtt://b\n  broker: aws_iot\n  max_inflight: 200\n"),
            ["7:17: uplink.max_inflight: aws_iot accepts at most 100 unacknowledged publishes, got 200"]
        );
        assert_eq!(
            uplink("  url: mqtt://b\n  broker: emqx_serverless\n  client_id: a-rather-long-gateway-name-01\n"),
            [r#"7:14: uplink.client_id: emqx_serverless accepts client ids of at most 23 characters, got 29 ("a-rather-long-gateway-name-01")"#]
        );
        // A derived default is reported at the broker, with the key to set.
        let text = with(&[
            ("  id: gw1\n", "  id: a-rather-long-gateway-name-01\n"),
            (
                "  url: mqtt://broker.local\n",
                "  url: mqtt://b\n  broker: emqx_serverless\n",
            ),
        ]);
        assert_eq!(
            errors(&text),
            [
                r#"6:11: uplink.broker: emqx_serverless accepts client ids of at most 23 characters, got 29 ("a-rather-long-gateway-name-01") (set uplink.client_id)"#
            ]
        );
        assert_eq!(
            uplink("  url: mqtt://b\n  broker: aws\n"),
            [
                r#"6:11: uplink.broker: unknown broker "aws": expected generic, aws_iot, azure_event_grid, emqx_serverless or hivemq_cloud"#
            ]
        );
    }

    #[test]
    fn the_broker_caps_the_window_and_the_drain_rate() {
        let text = with(&[(
            "  url: mqtt://broker.local\n",
            "  url: mqtt://b\n  broker: emqx_serverless\n  max_rate: 50\n",
        )]);
        let (config, warnings) = load_str_with_warnings(&text, "c.yaml").unwrap();
        assert_eq!(config.uplink.broker, Broker::EmqxServerless);
        assert_eq!(config.uplink.drain_rate(), Some(9));
        assert_eq!(
            warnings[0].to_string(),
            "c.yaml:7:13: uplink.max_rate: emqx_serverless accepts 10 publishes per second: the drain is capped at 9/s"
        );
        let mut uplink = config.uplink;
        uplink.max_rate = None;
        assert_eq!(uplink.drain_rate(), Some(9));
        uplink.broker = Broker::AwsIot;
        uplink.max_inflight = 64;
        assert_eq!(
            (uplink.inflight_window(), uplink.drain_rate()),
            (64, Some(90))
        );
        uplink.max_rate = Some(20);
        assert_eq!(uplink.drain_rate(), Some(20));
        uplink.broker = Broker::Generic;
        uplink.max_rate = None;
        assert_eq!(uplink.drain_rate(), None);
    }

    #[test]
    fn retain_is_refused_where_the_broker_has_none() {
        let config = crate::config::load_str(
            &with(&[(
                "        type: f32\n",
                "        type: f32\n        retain: true\n",
            )]),
            "c.yaml",
        )
        .unwrap();
        let fit = Fit {
            broker: "x",
            limits: BrokerLimits {
                retain: false,
                ..Broker::Generic.limits()
            },
            keys: &Keys {
                path: KeyPath::root().key("uplink"),
                present: Default::default(),
                rejected: Default::default(),
            },
        };
        let mut issues = Vec::new();
        fit.points(&config.devices, &mut issues);
        assert_eq!(issues.len(), 1);
    }
}
