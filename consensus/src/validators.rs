//! Validators and validator sets: who votes with what power, the proposer rotation, and the one rule for which
//! Ed25519 keys may be a validator's. The engine's view of these types is implemented in [`crate::context`].

use borsh::{BorshDeserialize, BorshSerialize};
use ed25519_consensus::VerificationKey;
use serde::{Deserialize, Serialize};

use crate::hash::Hash;
use crate::ids::Address;

/// A validator: address, Ed25519 consensus key and voting power.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Validator {
    pub address: Address,
    pub public_key: VerificationKey,
    pub voting_power: u64,
}

impl Validator {
    pub fn new(public_key: VerificationKey, voting_power: u64) -> Self {
        Validator {
            address: Address::from_public_key_bytes(public_key.as_bytes()),
            public_key,
            voting_power,
        }
    }
}

/// The validator set of a height, sorted by address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidatorSet {
    validators: Vec<Validator>,
    total_power: u64,
    hash: Hash,
    /// Proposer rotation: indices into `validators`, see [`ValidatorSet::proposer`].
    schedule: Vec<u32>,
    /// The rotation without benched validators (see [`crate::bench`]); empty when nobody is benched.
    active: Vec<u32>,
}

/// Longest proposer rotation; larger total powers are scaled down to fit (each validator keeps at least one slot).
const MAX_SCHEDULE: u64 = 4096;

/// The proposer rotation for `powers`: each index appears in proportion to its power (scaled into at most
/// `MAX_SCHEDULE` slots), laid out so that no index sits next to itself, cyclically, unless it holds more than
/// half the slots. Construction: list the slots grouped by validator, heaviest first, and deal them onto the even
/// positions and then the odd ones.
fn proposer_schedule(powers: &[u64]) -> Vec<u32> {
    let total: u64 = powers.iter().sum();
    let scale = total.div_ceil(MAX_SCHEDULE).max(1);
    let weights: Vec<u64> = powers.iter().map(|p| (p / scale).max(1)).collect();
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by(|a, b| weights[*b].cmp(&weights[*a]).then(a.cmp(b)));
    let flat: Vec<u32> = order
        .iter()
        .flat_map(|i| std::iter::repeat_n(*i as u32, weights[*i] as usize))
        .collect();
    let len = flat.len();
    let positions = (0..len).step_by(2).chain((1..len).step_by(2));
    let mut out = vec![0u32; len];
    for (pos, v) in positions.zip(flat) {
        out[pos] = v;
    }
    out
}

impl ValidatorSet {
    /// Builds a set; rejects an empty set, zero power, and duplicate keys.
    pub fn new(mut validators: Vec<Validator>) -> Result<Self, String> {
        if validators.is_empty() {
            return Err("the validator set is empty".into());
        }
        validators.sort_by_key(|v| v.address);
        if validators.windows(2).any(|w| w[0].address == w[1].address) {
            return Err("the validator set lists a key twice".into());
        }
        if let Some(v) = validators.iter().find(|v| v.voting_power == 0) {
            return Err(format!("validator {} has zero voting power", v.address));
        }
        let mut total: u64 = 0;
        for v in &validators {
            total = total
                .checked_add(v.voting_power)
                .ok_or("total voting power overflows u64")?;
        }
        let rows: Vec<([u8; 20], [u8; 32], u64)> = validators
            .iter()
            .map(|v| (v.address.0, *v.public_key.as_bytes(), v.voting_power))
            .collect();
        let enc = borsh::to_vec(&rows).map_err(|e| e.to_string())?;
        let hash = Hash::digest(&[b"baton/validator-set/v1", &enc]);
        let powers: Vec<u64> = validators.iter().map(|v| v.voting_power).collect();
        let schedule = proposer_schedule(&powers);
        Ok(ValidatorSet {
            validators,
            total_power: total,
            hash,
            schedule,
            active: Vec::new(),
        })
    }

    /// A set of equal-power validators (power 1 each).
    pub fn equal_power(keys: &[ed25519_consensus::VerificationKey]) -> Result<Self, String> {
        Self::new(keys.iter().map(|k| Validator::new(*k, 1)).collect())
    }

    /// The same set (same hash, same voting powers) with `benched` left out of the first rounds' proposer
    /// rotation. The bench is ignored when the benched validators hold more than a third of the power (or
    /// would leave nobody): a bench that large means the network itself is failing, and Tendermint's liveness
    /// needs every validator to get proposer turns.
    pub fn with_benched(&self, benched: &[Address]) -> ValidatorSet {
        let mut out = self.clone();
        let benched_power: u64 = self
            .validators
            .iter()
            .filter(|v| benched.contains(&v.address))
            .map(|v| v.voting_power)
            .sum();
        out.active = if benched.is_empty() || benched_power.saturating_mul(3) > self.total_power {
            Vec::new()
        } else {
            self.schedule
                .iter()
                .copied()
                .filter(|i| !benched.contains(&self.validators[*i as usize].address))
                .collect()
        };
        out
    }

    pub fn validators(&self) -> &[Validator] {
        &self.validators
    }

    pub fn hash(&self) -> Hash {
        self.hash
    }

    pub fn total_power(&self) -> u64 {
        self.total_power
    }

    pub fn get(&self, address: &Address) -> Option<&Validator> {
        self.validators
            .binary_search_by(|v| v.address.cmp(address))
            .ok()
            .map(|i| &self.validators[i])
    }

    /// The proposer of `(height, round)`: slot `height + round` of the rotation, so each validator proposes in
    /// proportion to its power and, unless it holds more than half the power, never for two consecutive rounds
    /// (a crashed proposer costs one timeout, not several in a row).
    ///
    /// Benched validators (see [`ValidatorSet::with_benched`]) are skipped in the first rounds, as many rounds
    /// as there are slots left without them; later rounds use the full rotation again, so that every validator
    /// (one holding a locked value among them) eventually proposes.
    pub fn proposer(&self, height: u64, round: u32) -> &Validator {
        let schedule = if self.active.is_empty() || round as usize >= self.active.len() {
            &self.schedule
        } else {
            &self.active
        };
        let slot = height.wrapping_add(u64::from(round)) % schedule.len() as u64;
        &self.validators[schedule[slot as usize] as usize]
    }
}

/// On the wire and on disk a set is its members (public key, voting power), sorted by address; decoding rebuilds
/// the rotation and refuses what [`ValidatorSet::new`] refuses (a bench is never encoded).
impl BorshSerialize for ValidatorSet {
    fn serialize<W: std::io::Write>(&self, writer: &mut W) -> std::io::Result<()> {
        let rows: Vec<([u8; 32], u64)> = self
            .validators
            .iter()
            .map(|v| (*v.public_key.as_bytes(), v.voting_power))
            .collect();
        BorshSerialize::serialize(&rows, writer)
    }
}

impl BorshDeserialize for ValidatorSet {
    fn deserialize_reader<R: std::io::Read>(reader: &mut R) -> std::io::Result<Self> {
        let rows: Vec<([u8; 32], u64)> = BorshDeserialize::deserialize_reader(reader)?;
        if rows.len() > MAX_VALIDATORS {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} validators, more than {MAX_VALIDATORS}", rows.len()),
            ));
        }
        let validators = rows
            .into_iter()
            .map(|(k, p)| {
                VerificationKey::try_from(k)
                    .map(|k| Validator::new(k, p))
                    .map_err(|e| {
                        std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        ValidatorSet::new(validators)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }
}

/// Most validators a decoded set may list.
pub const MAX_VALIDATORS: usize = 1024;

/// A validator's consensus key from its 32 bytes, if it can be one: a valid Ed25519 point that is not of small
/// order. A small-order key (the identity, or one of the seven other torsion points) has signatures that verify
/// under ZIP-215 for many messages without its holder signing them, so it is refused wherever a validator key
/// enters: genesis and staking registrations. The one rule for both.
pub fn validator_key(bytes: [u8; 32]) -> Result<VerificationKey, String> {
    let key = VerificationKey::try_from(bytes).map_err(|e| format!("not an Ed25519 key: {e}"))?;
    let small = curve25519_dalek_ng::edwards::CompressedEdwardsY(bytes)
        .decompress()
        .is_none_or(|p| p.is_small_order());
    if small {
        return Err("a small-order Ed25519 point cannot be a validator key".into());
    }
    Ok(key)
}

/// A validator as written in genesis: hex public key, power and the node's p2p address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisValidator {
    pub name: String,
    /// Ed25519 consensus public key, 32 bytes hex.
    pub public_key: String,
    pub voting_power: u64,
    /// libp2p multiaddr the validator listens on, e.g. `/ip4/127.0.0.1/tcp/26656`.
    pub p2p_addr: String,
    /// The validator's L1 attestation address (`0x…`, 20 bytes), required when genesis has an `[l1]` table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attester: Option<String>,
}

impl GenesisValidator {
    pub fn to_validator(&self) -> Result<Validator, String> {
        let bytes = hex::decode(self.public_key.trim_start_matches("0x"))
            .map_err(|e| format!("validator {}: public_key is not hex: {e}", self.name))?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| {
            format!(
                "validator {}: public_key is {} bytes, an Ed25519 key has 32",
                self.name,
                b.len()
            )
        })?;
        let key = validator_key(bytes)
            .map_err(|e| format!("validator {}: public_key is {e}", self.name))?;
        Ok(Validator::new(key, self.voting_power))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_consensus::SigningKey;

    #[test]
    fn small_order_keys_are_refused_in_genesis() {
        let genesis = |key: [u8; 32]| GenesisValidator {
            name: "v".into(),
            public_key: hex::encode(key),
            voting_power: 1,
            p2p_addr: "/ip4/127.0.0.1/tcp/1".into(),
            attester: None,
        };
        let mut identity = [0u8; 32];
        identity[0] = 1;
        // The point of order 2 (y = -1) and the identity: valid encodings, small order.
        let mut order_two = [0xff; 32];
        order_two[0] = 0xec;
        order_two[31] = 0x7f;
        for key in [identity, order_two] {
            let err = genesis(key).to_validator().unwrap_err();
            assert!(err.contains("small-order"), "{err}");
        }
        let good = SigningKey::from([7; 32]).verification_key().to_bytes();
        genesis(good).to_validator().unwrap();
    }

    fn set(powers: &[u64]) -> ValidatorSet {
        let vals = powers
            .iter()
            .enumerate()
            .map(|(i, p)| {
                Validator::new(SigningKey::from([i as u8 + 1; 32]).verification_key(), *p)
            })
            .collect();
        ValidatorSet::new(vals).unwrap()
    }

    #[test]
    fn proposer_rotation_is_weighted_by_power() {
        let vs = set(&[1, 1, 2]);
        let mut counts = std::collections::HashMap::new();
        for h in 1..=400 {
            *counts.entry(vs.proposer(h, 0).address).or_insert(0) += 1;
        }
        let heavy = vs
            .validators()
            .iter()
            .find(|v| v.voting_power == 2)
            .unwrap()
            .address;
        assert_eq!(counts[&heavy], 200);
        for weights in [
            &[1, 1, 2][..],
            &[5, 4, 4, 4, 4],
            &[3, 1, 1, 1],
            &[1, 1, 1, 1],
        ] {
            let vs = set(weights);
            for h in 0..100 {
                assert_ne!(
                    vs.proposer(h, 0).address,
                    vs.proposer(h, 1).address,
                    "{weights:?} height {h}"
                );
            }
        }
        let equal = set(&[1, 1, 1, 1]);
        let firsts: std::collections::HashSet<_> =
            (1..=4).map(|h| equal.proposer(h, 0).address).collect();
        assert_eq!(firsts.len(), 4, "equal powers rotate through everyone");
    }

    #[test]
    fn huge_powers_are_scaled_into_a_bounded_schedule() {
        let vs = set(&[u64::MAX / 4, 1, 1_000_000]);
        assert!(vs.schedule.len() as u64 <= MAX_SCHEDULE + 3);
        let seen: std::collections::HashSet<_> = (0..vs.schedule.len() as u64)
            .map(|h| vs.proposer(h, 0).address)
            .collect();
        assert_eq!(seen.len(), 3, "every validator keeps a slot");
    }

    #[test]
    fn set_hash_depends_on_members_and_power() {
        assert_eq!(set(&[1, 1]).hash(), set(&[1, 1]).hash());
        assert_ne!(set(&[1, 1]).hash(), set(&[1, 2]).hash());
        assert_ne!(set(&[1, 1]).hash(), set(&[1, 1, 1]).hash());
        assert!(ValidatorSet::new(vec![]).is_err());
    }
}
