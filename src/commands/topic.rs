//! Command topics (pure): `P/<device>/<point>/set` in, `P/<device>/<point>/set/result` out.

/// The filter the command handler subscribes to under `prefix`.
pub fn filter(prefix: &str) -> String {
    format!("{prefix}/+/+/set")
}

/// The device and point a command topic names; `None` for a topic that is not
/// `<prefix>/<device>/<point>/set` with two non-empty names.
pub fn parse<'t>(prefix: &str, topic: &'t str) -> Option<(&'t str, &'t str)> {
    let rest = topic.strip_prefix(prefix)?.strip_prefix('/')?;
    let names = rest.strip_suffix("/set")?;
    let (device, point) = names.split_once('/')?;
    (!device.is_empty() && !point.is_empty() && !point.contains('/')).then_some((device, point))
}

/// Where the result of a command on `device`/`point` goes.
pub fn result_topic(prefix: &str, device: &str, point: &str) -> String {
    format!("{prefix}/{device}/{point}/set/result")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_set_topics_under_the_prefix() {
        assert_eq!(filter("fieldrelay/gw"), "fieldrelay/gw/+/+/set");
        assert_eq!(
            parse("fieldrelay/gw", "fieldrelay/gw/boiler/setpoint/set"),
            Some(("boiler", "setpoint"))
        );
        for topic in [
            "fieldrelay/gw/boiler/setpoint",
            "fieldrelay/gw/boiler/setpoint/set/result",
            "fieldrelay/gw/boiler/set",
            "fieldrelay/gw//setpoint/set",
            "fieldrelay/gw/boiler//set",
            "fieldrelay/gwx/boiler/setpoint/set",
            "other/boiler/setpoint/set",
        ] {
            assert_eq!(parse("fieldrelay/gw", topic), None, "{topic}");
        }
        assert_eq!(
            result_topic("p", "boiler", "setpoint"),
            "p/boiler/setpoint/set/result"
        );
    }
}
