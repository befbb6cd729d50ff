//! What the on-site broker should hold retained (pure): each device's last status and the last
//! value of every point with `retain: true`, kept by the local client so it can publish them
//! again at every connect. A local broker that restarted without its persistence, or that was
//! down while a status changed, is thus brought up to date at once; the retained copies it
//! already holds are simply replaced by the same or newer ones.

use std::collections::BTreeMap;

use bytes::Bytes;

/// The latest retained payloads, by topic suffix (`<device>/status`, `<device>/<point>`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Retained {
    /// Suffix → payload; one entry per device status and per retained point, so its size is
    /// bounded by the configuration.
    latest: BTreeMap<String, Bytes>,
}

impl Retained {
    /// Records the newest retained payload for `suffix`.
    pub fn keep(&mut self, suffix: String, payload: Bytes) {
        self.latest.insert(suffix, payload);
    }

    /// Every suffix and its latest payload, in topic order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Bytes)> {
        self.latest.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn len(&self) -> usize {
        self.latest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.latest.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_latest_per_topic() {
        let mut retained = Retained::default();
        assert!(retained.is_empty());
        retained.keep("boiler/status".into(), Bytes::from_static(b"offline"));
        retained.keep("boiler/alarm".into(), Bytes::from_static(b"1"));
        retained.keep("boiler/status".into(), Bytes::from_static(b"online"));
        let all: Vec<_> = retained.iter().collect();
        assert_eq!(
            all,
            [
                ("boiler/alarm", &Bytes::from_static(b"1")),
                ("boiler/status", &Bytes::from_static(b"online"))
            ]
        );
        assert_eq!(retained.len(), 2);
    }
}
