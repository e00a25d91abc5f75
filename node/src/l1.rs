//! The node's side of L1 commitments: attesting at commitment heights and handing decided, attested headers to
//! the poster.
//!
//! When genesis has `[l1]`, every height that is a multiple of `commit_every` requires a vote extension on each
//! non-nil precommit: the validator's L1 attestation of `(height, block hash)`
//! ([`baton_l1_inclusion::commitment`]). [`Attestor::verify`] accepts an extension only if it recovers to the
//! attester genesis lists for that validator, so the deciding precommits of such a height always carry more than
//! 2/3 of the power in attestations. The loop stores them with the decision (so syncing peers receive them with
//! the certificate) and, on a posting node, offers the commitment to the [`Poster`].

use baton_l1_inclusion::redact::{redact_url, scrub};
use std::collections::HashMap;
use std::path::Path;

use alloy::network::EthereumWallet;
use alloy::primitives::Address as EthAddress;
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::signers::local::PrivateKeySigner;
use baton_consensus::context::Attestation;
use baton_consensus::hash::Hash;
use baton_consensus::ids::Address;
use baton_consensus::types::BlockHeader;
use baton_consensus::validators::ValidatorSet;
use baton_l1_inclusion::commitment::{AttestationDomain, Attester, SignedCommitment};
use baton_l1_inclusion::poster::{Poster, PosterHandle};
use tracing::{info, warn};

use crate::config::{Genesis, L1Section};
use crate::error::NodeError;

/// Attestation rules of one chain, this node's attestation key, and the poster if this node posts.
pub struct Attestor {
    domain: AttestationDomain,
    commit_every: u64,
    /// Validators' attesters (genesis, then staking registrations).
    lookup: AttesterLookup,
    key: Option<PrivateKeySigner>,
    poster: Option<PosterHandle>,
    /// The chain has epochs: validators outside genesis can be in a set.
    open_set: bool,
    epochs: Option<baton_consensus::epoch::SetRules>,
}

/// Where a validator's L1 attester comes from: genesis, or its staking registration.
#[derive(Clone)]
struct AttesterLookup {
    genesis: HashMap<Address, EthAddress>,
    registry: Option<crate::inbox::InboxView>,
}

impl AttesterLookup {
    fn attester(&self, validator: &Address) -> Option<EthAddress> {
        self.genesis
            .get(validator)
            .copied()
            .or_else(|| self.registry.as_ref().and_then(|r| r.attester(validator)))
    }

    fn powers(&self, set: &ValidatorSet) -> Vec<Attester> {
        set.validators()
            .iter()
            .filter_map(|v| {
                Some(Attester {
                    address: self.attester(&v.address)?,
                    power: v.voting_power,
                })
            })
            .collect()
    }
}

/// `set`'s members as `BatonCommitments.rotate` takes them (keys in the set's order, powers).
fn rotation_to(set: &ValidatorSet) -> baton_l1_inclusion::commitment::Rotation {
    baton_l1_inclusion::commitment::Rotation {
        keys: set
            .validators()
            .iter()
            .map(|v| alloy::primitives::B256::from(v.public_key.to_bytes()))
            .collect(),
        powers: set.validators().iter().map(|v| v.voting_power).collect(),
    }
}

/// The commitment that moves `BatonCommitments` out of the set it holds (`held`), built from what the node
/// stored: the first decided epoch-end block after height `after` whose header is decided by `held` and names
/// another set, with the attestations stored with its decision and the next set's members. `None` if the node has
/// not decided such a block (or lacks its attestations).
fn rotation_from(
    store: &crate::store::RocksStore,
    genesis: &ValidatorSet,
    lookup: &AttesterLookup,
    domain: &AttestationDomain,
    held: alloy::primitives::B256,
    after: u64,
) -> Option<SignedCommitment> {
    use baton_consensus::store::ChainRead;
    for (first, next) in store.set_changes().ok()? {
        let height = first.checked_sub(1)?;
        if height <= after {
            continue;
        }
        let block = store.block(height).ok()??;
        if alloy::primitives::B256::from(block.header.validator_set_hash.0) != held {
            continue;
        }
        let set = store.validators_for(height, genesis).ok()?;
        let attestations = store.extensions(height).ok()?;
        let mut c = SignedCommitment::verified(
            block.header,
            attestations.into_iter().map(|(_, (a, _))| a.0),
            domain,
            &lookup.powers(&set),
        )
        .ok()?;
        c.rotation = Some(rotation_to(&next));
        return Some(c);
    }
    None
}

impl std::fmt::Debug for Attestor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attestor")
            .field("domain", &self.domain)
            .field("commit_every", &self.commit_every)
            .field("attesting", &self.key.as_ref().map(|k| k.address()))
            .field("posting", &self.poster.is_some())
            .finish()
    }
}

/// A provider for `[l1] rpc_url` without fillers: the node's L1 components sign, price and number their own
/// transactions.
pub fn l1_provider(section: &L1Section) -> Result<DynProvider, NodeError> {
    let url = section
        .rpc_url
        .parse::<alloy::transports::http::reqwest::Url>()
        .map_err(|e| {
            NodeError::Config(format!(
                "l1.rpc_url {}: {}",
                redact_url(&section.rpc_url),
                scrub(&e.to_string(), &section.rpc_url)
            ))
        })?;
    Ok(ProviderBuilder::new()
        .disable_recommended_fillers()
        .connect_client(baton_l1_inclusion::redact::scrubbed_http_client(url))
        .erased())
}

/// Reads a secp256k1 key file (32 bytes as hex, optional `0x`).
pub fn load_l1_key(path: &Path) -> Result<PrivateKeySigner, NodeError> {
    let text = crate::keys::read_secret_file(path)?;
    text.trim()
        .parse::<PrivateKeySigner>()
        .map_err(|e| NodeError::Config(format!("L1 key {}: {e}", path.display())))
}

/// With genesis `[l1] staking` and an `[l1]` endpoint: checks that `BatonStaking` binds every genesis validator's
/// consensus key to the attester genesis lists for it (`attesterOf`, set by the contract's constructor and
/// permanent). The node takes a genesis validator's attester from genesis while `BatonCommitments.rotate` reads
/// `attesterOf`, so a genesis that names another attester would have this node verify attestations against one
/// address and L1 against another; the node refuses to start instead, naming the validator and both attesters.
/// It also refuses when L1 cannot be read (the check cannot be made). A node without an L1 endpoint skips it.
pub async fn check_staking_attesters(
    genesis: &Genesis,
    section: Option<&L1Section>,
) -> Result<(), NodeError> {
    let (Some(g), Some(s)) = (&genesis.l1, section) else {
        return Ok(());
    };
    let Some(staking) = g.staking_address()? else {
        return Ok(());
    };
    let contract = baton_l1_inclusion::contracts::BatonStaking::new(staking, l1_provider(s)?);
    let mut wrong = Vec::new();
    for (v, (address, attester, _)) in genesis.validators.iter().zip(genesis.attesters()?) {
        let public_key = v.to_validator().map_err(NodeError::Config)?.public_key;
        let key = alloy::primitives::B256::from(public_key.to_bytes());
        let bound = contract.attesterOf(key).call().await.map_err(|e| {
            NodeError::Config(format!(
                "cannot check the genesis attesters against BatonStaking {staking} on L1 at {}: \
                 attesterOf({key}): {}",
                redact_url(&s.rpc_url),
                scrub(&e.to_string(), &s.rpc_url)
            ))
        })?;
        if bound != attester {
            let contract_says = if bound == EthAddress::ZERO {
                "binds no attester to its key".to_string()
            } else {
                format!("binds its key to attester {bound}")
            };
            wrong.push(format!(
                "genesis validator {} ({address}) has attester {attester} in genesis, but BatonStaking \
                 {staking} {contract_says} (attesterOf)",
                v.name
            ));
        }
    }
    if wrong.is_empty() {
        return Ok(());
    }
    Err(NodeError::Config(format!(
        "the genesis and the staking contract disagree on attesters: {}. BatonCommitments.rotate reads the \
         contract's; the contract must be deployed from this genesis (its genesis keys and attesters)",
        wrong.join("; ")
    )))
}

impl Attestor {
    /// Builds the attestor for a node. `own` is this node's consensus address when it is a validator: it must then
    /// have an attestation key matching its genesis attester.
    ///
    /// `registry` (the node's L1 view) gives the attesters of validators that joined by staking; with `store`, a
    /// posting node rotates `BatonCommitments` through the set changes it has decided (see [`rotation_from`]). A
    /// posting node's poster runs in `tasks`.
    pub async fn start(
        genesis: &Genesis,
        section: Option<&L1Section>,
        own: Option<Address>,
        data_dir: &Path,
        registry: Option<crate::inbox::InboxView>,
        store: Option<crate::store::RocksStore>,
        tasks: &mut crate::tasks::Tasks,
    ) -> Result<Option<Attestor>, NodeError> {
        let Some(g) = &genesis.l1 else {
            return Ok(None);
        };
        let domain = AttestationDomain {
            l1_chain_id: g.chain_id,
            contract: g.commitments_address()?,
        };
        let lookup = AttesterLookup {
            genesis: genesis
                .attesters()?
                .into_iter()
                .map(|(a, e, _)| (a, e))
                .collect(),
            registry,
        };
        let key = match section {
            Some(s) => Some(load_l1_key(&s.attestation_key_file)?),
            None => None,
        };
        if let Some(me) = own {
            let expected = lookup.genesis.get(&me).copied();
            match (&key, expected) {
                (None, _) => {
                    return Err(NodeError::Config(
                        "genesis has [l1]: a validator needs [l1] attestation_key_file in its config".into(),
                    ))
                }
                (Some(k), Some(e)) if k.address() != e => {
                    return Err(NodeError::Config(format!(
                        "l1.attestation_key_file holds {}, but genesis lists {e} as this validator's attester",
                        k.address()
                    )))
                }
                _ => {}
            }
        }
        let mut poster = None;
        if let Some(s) = section {
            if let Some(pk) = &s.poster_key_file {
                let wallet = EthereumWallet::from(load_l1_key(pk)?);
                let provider = l1_provider(s)?;
                let chain = provider.get_chain_id().await.map_err(|e| {
                    NodeError::Config(format!(
                        "L1 at {}: {}",
                        redact_url(&s.rpc_url),
                        scrub(&e.to_string(), &s.rpc_url)
                    ))
                })?;
                if chain != g.chain_id {
                    return Err(NodeError::Config(format!(
                        "L1 at {} has chain id {chain}, genesis says {}",
                        redact_url(&s.rpc_url),
                        g.chain_id
                    )));
                }
                let (p, handle) = Poster::new(
                    provider,
                    wallet,
                    domain.contract,
                    s.poster.clone(),
                    Some(data_dir.join("l1-poster.json")),
                )
                .await
                .map_err(|e| NodeError::Config(e.to_string()))?;
                let p = match (&store, &genesis.epochs) {
                    (Some(store), Some(_)) => {
                        let (store, set, domain) =
                            (store.clone(), genesis.validator_set()?, domain);
                        let lookup = lookup.clone();
                        p.with_rotations(std::sync::Arc::new(move |held, after| {
                            rotation_from(&store, &set, &lookup, &domain, held, after)
                        }))
                    }
                    _ => p,
                };
                tasks.spawn("L1 commitment poster", p.run());
                info!(contract = %domain.contract, "posting commitments to L1");
                poster = Some(handle);
            }
        }
        Ok(Some(Attestor {
            domain,
            commit_every: g.commit_every,
            lookup,
            key,
            poster,
            open_set: genesis.epochs.is_some(),
            epochs: genesis.epochs.as_ref().map(|e| e.rules()).transpose()?,
        }))
    }

    /// Whether precommits at `height` must carry an attestation: commitment heights, and on a chain with epochs
    /// every epoch's last height (its commitment moves `BatonCommitments` to the next set).
    pub fn required(&self, height: u64) -> bool {
        height.is_multiple_of(self.commit_every)
            || self
                .epochs
                .as_ref()
                .is_some_and(|r| r.is_boundary(height + 1))
    }

    /// The attesters and powers of `set` (members whose attester this node cannot know are left out).
    pub fn powers_for(&self, set: &ValidatorSet) -> Vec<Attester> {
        self.lookup.powers(set)
    }

    /// This validator's attestation of `(height, block)`.
    pub fn extend(&self, height: u64, block: Hash) -> Option<Attestation> {
        let key = self.key.as_ref()?;
        match self.domain.sign(key, height, block) {
            Ok(sig) => Some(Attestation(sig)),
            Err(e) => {
                warn!(height, error = %e, "cannot sign the L1 attestation");
                None
            }
        }
    }

    /// Whether `attestation` is `validator`'s attester's signature of `(height, block)`.
    pub fn verify(
        &self,
        height: u64,
        block: Hash,
        validator: &Address,
        attestation: &Attestation,
    ) -> Result<(), String> {
        let expected = match self.lookup.attester(validator) {
            Some(e) => e,
            // A validator that joined by staking, on a node that does not follow L1 (a full node without `[l1]`):
            // it cannot know the registered attester. The engine has checked that the validator itself signed the
            // extension; whether it attested with its registered key is for nodes that post (and for L1) to judge.
            None if self.open_set && self.lookup.registry.is_none() => return Ok(()),
            None => {
                return Err(format!(
                    "validator {validator} has no attester in genesis or the staking contract"
                ))
            }
        };
        let got = self
            .domain
            .recover(height, block, &attestation.0, 0)
            .map_err(|e| e.to_string())?;
        if got != expected {
            return Err(format!(
                "attestation of validator {validator} recovers to {got}, not its attester {expected}"
            ));
        }
        Ok(())
    }

    /// After a commitment height is decided: offers the attested header to the poster (if this node posts).
    ///
    /// `set` decided the height; `next` is the set the header names when it differs (an epoch's last block): the
    /// commitment then carries the rotation to it.
    pub fn decided(
        &self,
        header: &BlockHeader,
        attestations: impl IntoIterator<Item = Attestation>,
        set: &ValidatorSet,
        next: Option<&ValidatorSet>,
    ) {
        let Some(poster) = &self.poster else {
            return;
        };
        match SignedCommitment::verified(
            header.clone(),
            attestations.into_iter().map(|a| a.0),
            &self.domain,
            &self.powers_for(set),
        ) {
            Ok(mut c) => {
                c.rotation = next.map(rotation_to);
                if !poster.offer(c) {
                    warn!(
                        height = header.height,
                        "poster queue full; a later commitment will supersede this one"
                    );
                }
            }
            Err(e) => {
                warn!(height = header.height, error = %e, "decided height lacks attestations to post")
            }
        }
    }

    pub fn poster(&self) -> Option<&PosterHandle> {
        self.poster.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{GenesisL1, L1Section};

    fn genesis(attester: EthAddress, node: &crate::keys::NodeKey) -> Genesis {
        crate::config::test_genesis(
            node,
            Some(format!("{attester:#x}")),
            Some(GenesisL1 {
                chain_id: 31337,
                commitments: "0x00000000000000000000000000000000000000aa".into(),
                commit_every: 5,
                inbox: "0x00000000000000000000000000000000000000bb".into(),
                inbox_from_block: 0,
                origin_safety: Default::default(),
                max_origin_lag: 64,
                staking: None,
            }),
        )
    }

    /// Starts an attestor for validator `me` with no inbox or store (what the key checks need).
    async fn attestor(
        g: &Genesis,
        section: Option<&L1Section>,
        me: Address,
        dir: &Path,
    ) -> Result<Option<Attestor>, NodeError> {
        Attestor::start(
            g,
            section,
            Some(me),
            dir,
            None,
            None,
            &mut crate::tasks::Tasks::new(),
        )
        .await
    }

    #[tokio::test]
    async fn a_validator_must_hold_its_genesis_attestation_key() {
        let dir = tempfile::tempdir().unwrap();
        let node = crate::keys::NodeKey::generate();
        let me = node.address();
        let key = PrivateKeySigner::random();
        let other = PrivateKeySigner::random();
        let path = dir.path().join("attest.key");
        crate::keys::write_secret_file(&path, &format!("{}", key.to_bytes())).unwrap();
        let section = L1Section {
            rpc_url: "http://127.0.0.1:1".into(),
            attestation_key_file: path,
            poster_key_file: None,
            poster: Default::default(),
            poll_ms: 500,
            origin_delay_ms: 1_000,
            based_safety: Default::default(),
            forward_key_file: None,
            forward: Default::default(),
        };

        // No key configured, or someone else's: refused with a message naming the setting.
        let g = genesis(key.address(), &node);
        let err = attestor(&g, None, me, dir.path()).await.unwrap_err();
        assert!(err.to_string().contains("attestation_key_file"), "{err}");
        let g_other = genesis(other.address(), &node);
        let err = attestor(&g_other, Some(&section), me, dir.path())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("genesis lists"), "{err}");

        // The right key: attests commitment heights only, and verification checks the signer.
        let a = attestor(&g, Some(&section), me, dir.path())
            .await
            .unwrap()
            .unwrap();
        assert!(a.required(10) && !a.required(11));
        let block = Hash::digest(&[b"block"]);
        let att = a.extend(10, block).unwrap();
        a.verify(10, block, &me, &att).unwrap();
        assert!(a.verify(15, block, &me, &att).is_err(), "another height");
        assert!(
            a.verify(10, Hash::digest(&[b"x"]), &me, &att).is_err(),
            "another block"
        );
        assert!(
            a.verify(10, block, &Address([9; 20]), &att).is_err(),
            "not a validator"
        );
        // With epochs, a node that does not follow L1 cannot know the attester of a validator that joined by
        // staking: the extension (signed by that validator, checked by the engine) is taken as it is.
        let mut open = a;
        open.open_set = true;
        open.verify(10, block, &Address([9; 20]), &att).unwrap();
        assert!(
            open.verify(15, block, &me, &att).is_err(),
            "genesis attesters are still checked"
        );
        // No [l1] in genesis: no attestor at all.
        let mut plain = g.clone();
        plain.l1 = None;
        assert!(attestor(&plain, None, me, dir.path())
            .await
            .unwrap()
            .is_none());
    }
}
