//! MQTT 5 topic aliases of one connection (MQTT 5 §3.3.2.3.4): the first PUBLISH on a topic
//! carries the topic and a new alias, later ones an empty topic and the alias, until the table
//! holds the broker's Topic Alias Maximum; topics after that go in full. The table starts empty
//! on every connection (aliases do not outlive one). Pure; the connection's writer keeps one.
//!
//! Aliases are handed out first come, first served and never reassigned: a gateway publishes
//! on a fixed set of topics (one per point, or per device with batches), so the first topics of
//! a connection are the ones it keeps using.

use std::collections::HashMap;

/// What a PUBLISH carries for its topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alias {
    /// No alias (none allowed, or the table is full): the topic alone.
    None,
    /// The topic and this new alias.
    New(u16),
    /// This alias and an empty topic.
    Known(u16),
}

#[derive(Debug, Default)]
pub struct Aliases {
    max: u16,
    table: HashMap<String, u16>,
    /// Topic bytes not sent thanks to aliases, less the alias properties' own bytes.
    saved: u64,
}

impl Aliases {
    /// A table for a connection whose broker allows `max` aliases.
    pub fn new(max: u16) -> Aliases {
        Aliases {
            max,
            ..Aliases::default()
        }
    }

    pub fn alias(&mut self, topic: &str) -> Alias {
        if let Some(&alias) = self.table.get(topic) {
            // The topic's bytes less the 3 of the alias property.
            self.saved += (topic.len() as u64).saturating_sub(3);
            return Alias::Known(alias);
        }
        let next = self.table.len() + 1;
        match u16::try_from(next) {
            Ok(alias) if alias <= self.max && !topic.is_empty() => {
                self.table.insert(topic.to_owned(), alias);
                Alias::New(alias)
            }
            _ => Alias::None,
        }
    }

    /// Bytes saved since the last call.
    pub fn take_saved(&mut self) -> u64 {
        std::mem::take(&mut self.saved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn first_send_names_the_topic_later_ones_only_the_alias() {
        let mut aliases = Aliases::new(2);
        assert_eq!(aliases.alias("p/boiler/temp"), Alias::New(1));
        assert_eq!(aliases.alias("p/boiler/temp"), Alias::Known(1));
        assert_eq!(aliases.take_saved(), 13 - 3);
        assert_eq!(aliases.alias("p/boiler/flow"), Alias::New(2));
        assert_eq!(aliases.alias("p/boiler/level"), Alias::None, "table full");
        assert_eq!(aliases.alias("p/boiler/level"), Alias::None);
        assert_eq!(Aliases::new(0).alias("t"), Alias::None);
    }

    proptest! {
        /// An alias always stands for one topic and stays within the broker's maximum.
        #[test]
        fn an_alias_is_one_topic_within_the_maximum(
            max in 0u16..8,
            topics in proptest::collection::vec(0u8..12, 1..60),
        ) {
            let mut aliases = Aliases::new(max);
            let mut seen: HashMap<u16, String> = HashMap::new();
            for t in topics {
                let topic = format!("t/{t}");
                match aliases.alias(&topic) {
                    Alias::New(a) => {
                        prop_assert!(a >= 1 && a <= max);
                        prop_assert!(seen.insert(a, topic).is_none());
                    }
                    Alias::Known(a) => prop_assert_eq!(seen.get(&a), Some(&topic)),
                    Alias::None => prop_assert!(seen.len() == usize::from(max)),
                }
            }
        }
    }
}
