//! Metric aliases of one edge node (pure).
//!
//! With aliases on, every birth declares a metric's name **and** a numeric alias, and DATA (and a
//! host's CMD) carry the alias alone (`payloads-alias-birth-requirement`,
//! `payloads-alias-data-cmd-requirement`): a DDATA metric costs one or two bytes of id instead of
//! its name.
//!
//! # Numbering
//! Aliases are positions, counted from 1 (some decoders treat 0 as "no alias"):
//! 1. `1..=`[`NODE_ALIASES`]: the node's health metrics ([`super::metric::NODE_METRICS`], in
//!    that order; the block is reserved, so a health figure added by a later version moves no
//!    point);
//! 2. from `NODE_ALIASES + 1`: every point of every device, devices in configuration order,
//!    points in configuration order.
//!
//! So they are unique across the node (`payloads-alias-uniqueness`) by construction, the same for
//! the same configuration on every run (a restart re-announces the same numbers), the first 112
//! points get one-byte varints, and a device or point appended at the end of the file keeps every
//! other alias. `bdSeq` and
//! `Node Control/Rebirth` get none: the spec forbids an alias on Rebirth
//! (`operational-behavior-data-commands-rebirth-name-aliases`) and NDEATH names `bdSeq`.
//!
//! A change of the device map (a reload) makes a new table; the caller must then send a new
//! NBIRTH and DBIRTHs before any DATA, as the numbers of the old births no longer hold.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::DeviceConfig;

/// Aliases reserved for node metrics; points start after them.
pub const NODE_ALIASES: u64 = 15;

const _: () = assert!(super::metric::NODE_METRICS.len() as u64 <= NODE_ALIASES);

/// What an alias stands for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MetricRef {
    /// A point of a device.
    Device { device: Arc<str>, point: Arc<str> },
    /// A node metric (a health figure).
    Node { name: Arc<str> },
}

/// The alias table of one node; see the module header for the numbering.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AliasTable {
    by_alias: HashMap<u64, MetricRef>,
    index: HashMap<MetricRef, u64>,
}

impl AliasTable {
    /// `devices`: each device's name and its points' names, in configuration order;
    /// `node_metrics`: the node metrics' names. A name repeated where the configuration forbids
    /// it (two devices, or two points of one device, with one name) keeps its first alias; node
    /// metrics beyond the reserved block are numbered after the points.
    pub fn new<'a, P>(
        devices: impl IntoIterator<Item = (&'a str, P)>,
        node_metrics: impl IntoIterator<Item = &'a str>,
    ) -> AliasTable
    where
        P: IntoIterator<Item = &'a str>,
    {
        let mut table = AliasTable::default();
        let mut overflow = Vec::new();
        for (position, name) in (1..).zip(node_metrics) {
            let metric = MetricRef::Node {
                name: Arc::from(name),
            };
            if position <= NODE_ALIASES {
                table.insert(position, metric);
            } else {
                overflow.push(metric);
            }
        }
        let mut next = NODE_ALIASES + 1;
        let points = devices.into_iter().flat_map(|(device, points)| {
            let device: Arc<str> = Arc::from(device);
            points.into_iter().map(move |point| MetricRef::Device {
                device: device.clone(),
                point: Arc::from(point),
            })
        });
        for metric in points.chain(overflow) {
            if table.insert(next, metric) {
                next += 1;
            }
        }
        table
    }

    /// The table of a configuration's devices and the gateway's health metrics.
    pub fn for_devices(devices: &[DeviceConfig]) -> AliasTable {
        AliasTable::new(
            devices
                .iter()
                .map(|d| (d.name.as_str(), d.points.iter().map(|p| p.name.as_str()))),
            super::metric::NODE_METRICS.iter().map(|m| m.name),
        )
    }

    /// Gives `metric` the alias unless it has one already; whether it took it.
    fn insert(&mut self, alias: u64, metric: MetricRef) -> bool {
        if self.index.contains_key(&metric) {
            return false;
        }
        self.index.insert(metric.clone(), alias);
        self.by_alias.insert(alias, metric);
        true
    }

    /// The alias of a device's point.
    pub fn device(&self, device: &str, point: &str) -> Option<u64> {
        self.index
            .get(&MetricRef::Device {
                device: Arc::from(device),
                point: Arc::from(point),
            })
            .copied()
    }

    /// The alias of a node metric.
    pub fn node(&self, name: &str) -> Option<u64> {
        self.index
            .get(&MetricRef::Node {
                name: Arc::from(name),
            })
            .copied()
    }

    /// What an alias (from a host's command) stands for.
    pub fn resolve(&self, alias: u64) -> Option<&MetricRef> {
        self.by_alias.get(&alias)
    }

    pub fn len(&self) -> usize {
        self.by_alias.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_alias.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn table(devices: &[(String, Vec<String>)]) -> AliasTable {
        AliasTable::new(
            devices
                .iter()
                .map(|(d, ps)| (d.as_str(), ps.iter().map(String::as_str))),
            super::super::metric::NODE_METRICS.iter().map(|m| m.name),
        )
    }

    #[test]
    fn node_metrics_from_one_then_points_after_the_reserved_block() {
        let t = AliasTable::new(
            [("boiler", vec!["temp", "setpoint"]), ("pump", vec!["rpm"])],
            ["Queue/Depth", "Uplink/Connects"],
        );
        assert_eq!(t.node("Queue/Depth"), Some(1));
        assert_eq!(t.node("Uplink/Connects"), Some(2));
        assert_eq!(t.device("boiler", "temp"), Some(16));
        assert_eq!(t.device("boiler", "setpoint"), Some(17));
        assert_eq!(t.device("pump", "rpm"), Some(18));
        assert_eq!(t.device("pump", "temp"), None);
        assert_eq!(t.len(), 5);
        for unused in [0, 3, 15, 19, u64::MAX] {
            assert_eq!(t.resolve(unused), None, "{unused}");
        }
        assert_eq!(
            t.resolve(18),
            Some(&MetricRef::Device {
                device: "pump".into(),
                point: "rpm".into()
            })
        );
    }

    fn devices() -> impl Strategy<Value = Vec<(String, Vec<String>)>> {
        // Unique device names, unique point names per device: what the config guarantees.
        proptest::collection::btree_map(
            "[a-z]{1,6}",
            proptest::collection::btree_set("[a-z0-9_]{1,6}", 0..8),
            0..6,
        )
        .prop_map(|m| {
            m.into_iter()
                .map(|(d, ps)| (d, ps.into_iter().collect()))
                .collect()
        })
    }

    proptest! {
        #[test]
        fn aliases_are_unique_dense_and_resolve_back(devices in devices()) {
            let t = table(&devices);
            let mut seen = BTreeSet::new();
            for (device, points) in &devices {
                for point in points {
                    let alias = t.device(device, point).unwrap();
                    prop_assert!(seen.insert(alias));
                    prop_assert_eq!(t.resolve(alias), Some(&MetricRef::Device { device: device.as_str().into(), point: point.as_str().into() }));
                }
            }
            for m in super::super::metric::NODE_METRICS {
                let alias = t.node(m.name).unwrap();
                prop_assert!(alias <= NODE_ALIASES);
                prop_assert!(seen.insert(alias));
            }
            prop_assert_eq!(seen.len(), t.len());
        }

        #[test]
        fn node_metrics_beyond_the_block_still_get_unique_aliases(n in 0usize..40, points in 0usize..5) {
            let names: Vec<String> = (0..n).map(|i| format!("n{i}")).collect();
            let point_names: Vec<String> = (0..points).map(|i| format!("p{i}")).collect();
            let t = AliasTable::new([("d", point_names.iter().map(String::as_str))], names.iter().map(String::as_str));
            let aliases: BTreeSet<u64> = names.iter().map(|n| t.node(n).unwrap())
                .chain(point_names.iter().map(|p| t.device("d", p).unwrap()))
                .collect();
            prop_assert_eq!(aliases.len(), n + points);
        }

        /// Same configuration, same table (a restart re-announces the same aliases), and a
        /// device appended at the end leaves every other alias alone.
        #[test]
        fn stable_for_the_same_config_and_when_appending(devices in devices(), extra in proptest::collection::vec("[a-z]{1,4}", 1..4)) {
            let t = table(&devices);
            prop_assert_eq!(&table(&devices), &t);
            let mut more = devices.clone();
            more.push(("zz-appended".to_owned(), extra));
            let t2 = table(&more);
            for (device, points) in &devices {
                for point in points {
                    prop_assert_eq!(t2.device(device, point), t.device(device, point));
                }
            }
            for m in super::super::metric::NODE_METRICS {
                prop_assert_eq!(t2.node(m.name), t.node(m.name));
            }
        }
    }
}
