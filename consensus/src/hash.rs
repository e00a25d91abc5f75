//! SHA-256 hashes and the binary Merkle tree that block headers commit to.
//!
//! The tree follows RFC 6962 (Certificate Transparency): leaves are hashed as `H(0x00 || leaf)`, inner nodes as
//! `H(0x01 || left || right)`, and a tree of `n` leaves splits at the largest power of two below `n`. The prefixes
//! keep a leaf from ever being mistaken for an inner node. The empty tree's root is `H("")`.

use std::fmt;

use borsh::{BorshDeserialize, BorshSerialize};
use sha2::{Digest, Sha256};

/// A 32-byte SHA-256 digest.
#[derive(
    Copy, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, BorshSerialize, BorshDeserialize,
)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    pub const ZERO: Hash = Hash([0; 32]);

    /// Hash of the concatenation of `parts`.
    pub fn digest(parts: &[&[u8]]) -> Hash {
        let mut h = Sha256::new();
        for p in parts {
            h.update(p);
        }
        Hash(h.finalize().into())
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Parses exactly 32 bytes; `None` for any other length.
    pub fn from_slice(bytes: &[u8]) -> Option<Hash> {
        <[u8; 32]>::try_from(bytes).ok().map(Hash)
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", &self.to_hex()[..12])
    }
}

/// Hash of a Merkle leaf (prefix 0x00).
pub fn leaf_hash(data: &[u8]) -> Hash {
    Hash::digest(&[&[0x00], data])
}

/// Hash of a Merkle inner node (prefix 0x01).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    Hash::digest(&[&[0x01], &left.0, &right.0])
}

/// Root of the Merkle tree whose leaves hash to `leaves` (already leaf-hashed with [`leaf_hash`]).
pub fn merkle_root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => Hash::digest(&[]),
        1 => leaves[0],
        n => {
            let k = split_point(n);
            node_hash(&merkle_root(&leaves[..k]), &merkle_root(&leaves[k..]))
        }
    }
}

/// The largest power of two strictly below `n` (n >= 2).
fn split_point(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n)
            .map(|i| leaf_hash(&(i as u64).to_be_bytes()))
            .collect()
    }

    #[test]
    fn root_of_one_leaf_is_the_leaf() {
        let l = leaves(1);
        assert_eq!(merkle_root(&l), l[0]);
    }

    #[test]
    fn root_follows_rfc6962_shape() {
        let l = leaves(3);
        let expected = node_hash(&node_hash(&l[0], &l[1]), &l[2]);
        assert_eq!(merkle_root(&l), expected);
        let l = leaves(5);
        let left = node_hash(&node_hash(&l[0], &l[1]), &node_hash(&l[2], &l[3]));
        assert_eq!(merkle_root(&l), node_hash(&left, &l[4]));
    }

    #[test]
    fn any_change_in_any_leaf_or_order_changes_the_root() {
        for n in 1..20 {
            let l = leaves(n);
            let root = merkle_root(&l);
            for i in 0..n {
                let mut m = l.clone();
                m[i] = leaf_hash(b"tampered");
                assert_ne!(merkle_root(&m), root, "n={n} i={i}");
            }
            if n > 1 {
                let mut m = l.clone();
                m.swap(0, n - 1);
                assert_ne!(merkle_root(&m), root, "swap n={n}");
            }
        }
    }

    #[test]
    fn leaf_and_node_domains_differ() {
        let a = leaf_hash(b"a");
        let b = leaf_hash(b"b");
        let mut concat = vec![];
        concat.extend_from_slice(&a.0);
        concat.extend_from_slice(&b.0);
        assert_ne!(leaf_hash(&concat), node_hash(&a, &b));
    }
}
