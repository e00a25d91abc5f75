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

/// The audit path (RFC 6962 §2.1.1) of leaf `index` in the tree over `leaves`: sibling hashes from the leaf up to
/// the root. `None` if `index` is out of range.
pub fn merkle_proof(leaves: &[Hash], index: usize) -> Option<Vec<Hash>> {
    if index >= leaves.len() {
        return None;
    }
    let mut path = Vec::new();
    audit_path(leaves, index, &mut path);
    Some(path)
}

fn audit_path(leaves: &[Hash], index: usize, out: &mut Vec<Hash>) {
    let n = leaves.len();
    if n <= 1 {
        return;
    }
    let k = split_point(n);
    if index < k {
        audit_path(&leaves[..k], index, out);
        out.push(merkle_root(&leaves[k..]));
    } else {
        audit_path(&leaves[k..], index - k, out);
        out.push(merkle_root(&leaves[..k]));
    }
}

/// Checks that `leaf` sits at `index` of a tree of `size` leaves with root `root`, given its audit path
/// (RFC 9162 §2.1.3.2). Any wrong sibling, index, size or extra/missing step fails.
pub fn verify_merkle_proof(leaf: &Hash, index: u64, size: u64, path: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut fn_, mut sn) = (index, size - 1);
    let mut r = *leaf;
    for p in path {
        if sn == 0 {
            return false;
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    sn == 0 && r == *root
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
    fn proofs_verify_and_reject_any_change() {
        for n in 1..40usize {
            let l = leaves(n);
            let root = merkle_root(&l);
            for i in 0..n {
                let path = merkle_proof(&l, i).unwrap();
                assert!(
                    verify_merkle_proof(&l[i], i as u64, n as u64, &path, &root),
                    "n={n} i={i}"
                );
                // Wrong leaf, index, size, sibling, or a path with a step missing or added.
                assert!(!verify_merkle_proof(
                    &leaf_hash(b"x"),
                    i as u64,
                    n as u64,
                    &path,
                    &root
                ));
                if n > 1 {
                    let j = (i + 1) % n;
                    assert!(
                        !verify_merkle_proof(&l[i], j as u64, n as u64, &path, &root),
                        "n={n} i={i}"
                    );
                }
                for k in 0..path.len() {
                    let mut bad = path.clone();
                    bad[k] = leaf_hash(b"y");
                    assert!(!verify_merkle_proof(&l[i], i as u64, n as u64, &bad, &root));
                }
                if !path.is_empty() {
                    assert!(!verify_merkle_proof(
                        &l[i],
                        i as u64,
                        n as u64,
                        &path[1..],
                        &root
                    ));
                }
                let mut longer = path.clone();
                longer.push(root);
                assert!(!verify_merkle_proof(
                    &l[i], i as u64, n as u64, &longer, &root
                ));
            }
            assert!(merkle_proof(&l, n).is_none());
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
