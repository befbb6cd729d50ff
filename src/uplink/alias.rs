//! MQTT 5 topic aliases of one connection (MQTT 5 §3.3.2.3.4): a topic's first PUBLISH goes by
//! name alone, its second carries the topic and a new alias, later ones an empty topic and the
//! alias, until the table holds the broker's Topic Alias Maximum; topics after that go by name.
//! The table starts empty on every connection (aliases do not outlive one). Pure; the
//! connection's writer keeps one.
//!
//! Why this policy, when the broker allows fewer aliases than the gateway has topics (mosquitto
//! allows 10 by default, a device often has more points):
//! - **Never re-mapped.** Re-pointing an alias at another topic costs that topic in full plus
//!   the alias property, and the evicted topic then goes by name (or evicts again): with a
//!   fixed set of topics published round-robin, churn saves nothing and costs 3 bytes a send.
//!   Aliases are handed out once and kept, so the first topics to repeat keep them and every
//!   other topic costs exactly what it would without aliases.
//! - **On the second use.** A topic seen once may never come again (the birth certificate, a
//!   command result): giving it an alias would spend a slot that a data topic, which repeats
//!   every poll, would use on every send. Waiting for a repeat costs one extra send by name
//!   per aliased topic per connection.
//! - **Only where it saves.** An alias property is 3 bytes (identifier and two-byte value); a
//!   topic of 3 bytes or fewer goes by name.

use std::collections::{HashMap, HashSet};

/// What a PUBLISH carries for its topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alias {
    /// No alias (first use, too short, none allowed, or the table is full): the topic alone.
    None,
    /// The topic and this new alias.
    New(u16),
    /// This alias and an empty topic.
    Known(u16),
}

/// Bytes of a Topic Alias property: identifier 0x23 and a two-byte integer.
pub const ALIAS_PROPERTY: u64 = 3;

#[derive(Debug, Default)]
pub struct Aliases {
    max: u16,
    table: HashMap<String, u16>,
    /// Topics sent once by name, waiting for a repeat (bounded: cleared once the table is full).
    seen: HashSet<String>,
    /// Topic bytes not sent thanks to aliases, less the alias properties' own bytes.
    saved: i64,
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
            self.saved += topic.len() as i64 - ALIAS_PROPERTY as i64;
            return Alias::Known(alias);
        }
        let full = self.table.len() >= usize::from(self.max);
        if full || topic.len() as u64 <= ALIAS_PROPERTY {
            return Alias::None;
        }
        if self.seen.insert(topic.to_owned()) {
            return Alias::None;
        }
        self.seen.remove(topic);
        // Not full, so the next alias is at most `max`.
        let alias = u16::try_from(self.table.len() + 1).unwrap_or(u16::MAX);
        self.table.insert(topic.to_owned(), alias);
        if self.table.len() >= usize::from(self.max) {
            self.seen = HashSet::new();
        }
        self.saved -= ALIAS_PROPERTY as i64;
        Alias::New(alias)
    }

    /// Bytes saved since the last call (the cost of new aliases deducted; not below zero).
    pub fn take_saved(&mut self) -> u64 {
        let saved = std::mem::take(&mut self.saved);
        if saved < 0 {
            // Carried over: a new alias is paid back by its next sends.
            self.saved = saved;
            return 0;
        }
        saved as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_repeated_topic_gets_an_alias_on_its_second_send() {
        let mut aliases = Aliases::new(2);
        assert_eq!(aliases.alias("p/boiler/temp"), Alias::None);
        assert_eq!(aliases.alias("p/boiler/temp"), Alias::New(1));
        assert_eq!(aliases.alias("p/boiler/temp"), Alias::Known(1));
        assert_eq!(aliases.take_saved(), 13 - 3 - 3);
        assert_eq!(aliases.alias("p/status"), Alias::None, "seen once");
        assert_eq!(aliases.alias("p/boiler/flow"), Alias::None);
        assert_eq!(aliases.alias("p/boiler/flow"), Alias::New(2));
        assert_eq!(aliases.alias("p/boiler/level"), Alias::None, "table full");
        assert_eq!(aliases.alias("p/boiler/level"), Alias::None);
        assert_eq!(
            aliases.alias("p/boiler/temp"),
            Alias::Known(1),
            "never re-mapped"
        );
        assert_eq!(Aliases::new(0).alias("t/x"), Alias::None);
    }

    #[test]
    fn short_topics_go_by_name() {
        let mut aliases = Aliases::new(5);
        for _ in 0..3 {
            assert_eq!(aliases.alias("abc"), Alias::None);
        }
        assert_eq!(aliases.take_saved(), 0);
    }

    #[test]
    fn the_cost_of_a_new_alias_is_carried_until_repaid() {
        let mut aliases = Aliases::new(1);
        aliases.alias("abcd");
        aliases.alias("abcd");
        assert_eq!(aliases.take_saved(), 0, "3 bytes spent");
        aliases.alias("abcd");
        aliases.alias("abcd");
        aliases.alias("abcd");
        assert_eq!(aliases.take_saved(), 0, "1 byte each, 3 owed");
        aliases.alias("abcd");
        assert_eq!(aliases.take_saved(), 1);
    }

    proptest! {
        /// An alias always stands for one topic, stays within the broker's maximum and is never
        /// re-mapped; aliases cost at most the one-off 3 bytes of each new alias over sending
        /// every topic by name (every later use saves), and `take_saved` reports the difference.
        #[test]
        fn aliases_are_stable_within_the_maximum_and_never_cost_more_than_they_save(
            max in 0u16..8,
            topics in proptest::collection::vec(0u8..12, 1..80),
        ) {
            let mut aliases = Aliases::new(max);
            let mut seen: HashMap<u16, String> = HashMap::new();
            let (mut by_name, mut with_aliases, mut new) = (0u64, 0u64, 0u64);
            for t in topics {
                let topic = format!("t/{t}/{}", "x".repeat(usize::from(t)));
                by_name += topic.len() as u64;
                match aliases.alias(&topic) {
                    Alias::New(a) => {
                        prop_assert!(a >= 1 && a <= max);
                        prop_assert!(seen.insert(a, topic.clone()).is_none());
                        with_aliases += topic.len() as u64 + ALIAS_PROPERTY;
                        new += 1;
                    }
                    Alias::Known(a) => {
                        prop_assert_eq!(seen.get(&a), Some(&topic));
                        prop_assert!(topic.len() as u64 > ALIAS_PROPERTY);
                        with_aliases += ALIAS_PROPERTY;
                    }
                    Alias::None => with_aliases += topic.len() as u64,
                }
            }
            prop_assert!(with_aliases <= by_name + ALIAS_PROPERTY * new);
            prop_assert_eq!(aliases.take_saved(), by_name.saturating_sub(with_aliases));
        }
    }
}
