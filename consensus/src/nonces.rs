//! The decided chain's next nonce per sender, kept in memory for the senders a node has seen lately.
//!
//! Admission and block validation read a sender's next nonce for every bundle, on every node; from the store each
//! read is a RocksDB point lookup. The host is the store's only writer of nonces (a decision's commit), so a table
//! it writes through at each decision stays equal to the store for every sender it holds. A sender not in the
//! table is read from the store. The table is bounded: past `max` senders it starts over empty, which costs reads,
//! never a wrong answer.

use std::collections::HashMap;

use crate::bundle::Sender;

/// Default most senders kept: at 20 bytes of address and 8 of nonce per entry (about 64 bytes with the map's own
/// overhead) that is about 6 MiB, and every entry has the same size, so the count bounds the bytes.
pub const DEFAULT_MAX_SENDERS: usize = 100_000;

/// Sender → next nonce on the decided chain, for the senders it holds. See the module docs.
#[derive(Debug)]
pub struct NonceTable {
    next: HashMap<Sender, u64>,
    max: usize,
}

impl NonceTable {
    /// A table of at most `max` senders (0 keeps none: every read goes to the store).
    pub fn new(max: usize) -> Self {
        NonceTable {
            next: HashMap::new(),
            max,
        }
    }

    /// The sender's next nonce, if the table holds the sender.
    pub fn get(&self, sender: &Sender) -> Option<u64> {
        self.next.get(sender).copied()
    }

    /// Records the sender's next nonce as read from the store or written by a decision.
    pub fn set(&mut self, sender: Sender, next: u64) {
        if self.max == 0 {
            return;
        }
        if self.next.len() >= self.max && !self.next.contains_key(&sender) {
            // Starting over keeps every operation O(1) without an eviction order; the senders still active come
            // back with their next bundle's read.
            self.next.clear();
        }
        self.next.insert(sender, next);
    }

    /// A decided block's bundles, as (sender, nonce): each sender's next nonce moves past its bundles, as the
    /// store's commit moves it.
    pub fn decided<'a>(&mut self, bundles: impl IntoIterator<Item = (&'a Sender, u64)>) {
        for (sender, nonce) in bundles {
            let next = self.get(sender).map_or(nonce + 1, |n| n.max(nonce + 1));
            self.set(*sender, next);
        }
    }

    /// Senders held.
    pub fn len(&self) -> usize {
        self.next.len()
    }

    pub fn is_empty(&self) -> bool {
        self.next.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sender(i: u8) -> Sender {
        Sender::repeat_byte(i)
    }

    #[test]
    fn a_decision_moves_each_sender_past_its_bundles() {
        let mut t = NonceTable::new(10);
        t.set(sender(1), 3);
        t.decided([(&sender(1), 3), (&sender(1), 4), (&sender(2), 0)]);
        assert_eq!(t.get(&sender(1)), Some(5));
        assert_eq!(t.get(&sender(2)), Some(1));
        assert_eq!(t.get(&sender(3)), None);
    }

    #[test]
    fn past_its_bound_the_table_starts_over_and_never_holds_more() {
        let mut t = NonceTable::new(3);
        for i in 0..3 {
            t.set(sender(i), u64::from(i));
        }
        t.set(sender(1), 7);
        assert_eq!(t.len(), 3, "updating a held sender evicts nothing");
        t.set(sender(9), 1);
        assert_eq!(t.len(), 1);
        assert_eq!(t.get(&sender(9)), Some(1));
        assert_eq!(
            t.get(&sender(1)),
            None,
            "forgotten, so read from the store again"
        );
        let mut none = NonceTable::new(0);
        none.set(sender(1), 1);
        assert!(none.is_empty());
    }
}
