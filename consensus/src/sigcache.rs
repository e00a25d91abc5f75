//! Verify once: a bounded memory of consensus signatures already known to be good.
//!
//! The engine checks a signature more than once: every precommit when it arrives and again inside the commit
//! certificate it builds at the decision, and this node's own votes, which it signed itself. An entry is the
//! SHA-256 of (public key, signature, signed bytes), so a hit means exactly these bytes were checked (or signed
//! here) before; anything else is verified as usual. The memory holds a fixed number of 32-byte entries and
//! forgets the oldest first.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use sha2::{Digest, Sha256};

/// Entries a node keeps by default: a few heights of votes for a set of a few hundred validators.
pub const DEFAULT_SIGNATURE_CACHE: usize = 8_192;

/// See the module docs.
#[derive(Debug)]
pub struct SignatureCache {
    inner: Mutex<Inner>,
    capacity: usize,
}

#[derive(Debug, Default)]
struct Inner {
    set: HashSet<[u8; 32]>,
    order: VecDeque<[u8; 32]>,
    hits: u64,
}

fn key(public_key: &[u8], message: &[u8], signature: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"baton/sigcache/v1");
    h.update((public_key.len() as u32).to_be_bytes());
    h.update(public_key);
    h.update((signature.len() as u32).to_be_bytes());
    h.update(signature);
    h.update(message);
    h.finalize().into()
}

impl SignatureCache {
    pub fn new(capacity: usize) -> Self {
        SignatureCache {
            inner: Mutex::new(Inner::default()),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Remembers a signature known to be good (checked, or made by this node).
    pub fn remember(&self, public_key: &[u8], message: &[u8], signature: &[u8]) {
        let k = key(public_key, message, signature);
        let mut inner = self.lock();
        if inner.set.insert(k) {
            inner.order.push_back(k);
            while inner.order.len() > self.capacity {
                if let Some(old) = inner.order.pop_front() {
                    inner.set.remove(&old);
                }
            }
        }
    }

    /// Whether this exact signature over these bytes by this key was remembered.
    pub fn known(&self, public_key: &[u8], message: &[u8], signature: &[u8]) -> bool {
        let k = key(public_key, message, signature);
        let mut inner = self.lock();
        let hit = inner.set.contains(&k);
        if hit {
            inner.hits += 1;
        }
        hit
    }

    /// Checks that answered from memory so far.
    pub fn hits(&self) -> u64 {
        self.lock().hits
    }

    pub fn len(&self) -> usize {
        self.lock().order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_exact_triples_and_forgets_the_oldest() {
        let c = SignatureCache::new(2);
        c.remember(b"pk", b"msg", b"sig");
        assert!(c.known(b"pk", b"msg", b"sig"));
        // Any other key, message or signature is not known.
        assert!(!c.known(b"pk2", b"msg", b"sig"));
        assert!(!c.known(b"pk", b"msg2", b"sig"));
        assert!(!c.known(b"pk", b"msg", b"sig2"));
        // Moving bytes between fields does not collide (lengths are part of the entry).
        assert!(!c.known(b"p", b"msg", b"ksig"));
        c.remember(b"pk", b"m2", b"s");
        c.remember(b"pk", b"m3", b"s");
        assert_eq!(c.len(), 2);
        assert!(!c.known(b"pk", b"msg", b"sig"), "the oldest was forgotten");
        assert!(c.known(b"pk", b"m3", b"s"));
        assert_eq!(c.hits(), 2);
    }
}
