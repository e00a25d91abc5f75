//! Reading `BatonStaking` events as the staking events Baton's set function folds
//! ([`baton_consensus::epoch`]).
//!
//! Each log of the staking contract becomes a [`PositionedEvent`] keyed by its consensus key, positioned by its
//! transaction and log index; [`by_block`] groups a range's events per L1 block, the unit
//! [`baton_consensus::epoch::CandidateTable::apply_block`] takes. Allowlist and governance events change who may
//! register, not the table, and are not returned.

use std::collections::BTreeMap;

use alloy::rpc::types::Log;
use alloy::sol_types::SolEvent;
use baton_consensus::epoch::{PositionedEvent, StakeEvent};

use crate::contracts::BatonStaking;

/// The staking event in `log`, if it is one the set function uses.
pub fn decode(log: &Log) -> Option<(u64, PositionedEvent)> {
    let block = log.block_number?;
    let event = match *log.topic0()? {
        t if t == BatonStaking::Registered::SIGNATURE_HASH => {
            let e = BatonStaking::Registered::decode_log_data(log.data()).ok()?;
            StakeEvent::Registered {
                key: e.consensusKey.0,
                attester: e.attester.0 .0,
                stake: u128::try_from(e.amount).unwrap_or(u128::MAX),
            }
        }
        t if t == BatonStaking::Increased::SIGNATURE_HASH => {
            let e = BatonStaking::Increased::decode_log_data(log.data()).ok()?;
            StakeEvent::Increased {
                key: e.consensusKey.0,
                amount: u128::try_from(e.amount).unwrap_or(u128::MAX),
            }
        }
        t if t == BatonStaking::ExitRequested::SIGNATURE_HASH => {
            let e = BatonStaking::ExitRequested::decode_log_data(log.data()).ok()?;
            StakeEvent::ExitRequested {
                key: e.consensusKey.0,
            }
        }
        t if t == BatonStaking::Withdrawn::SIGNATURE_HASH => {
            let e = BatonStaking::Withdrawn::decode_log_data(log.data()).ok()?;
            StakeEvent::Withdrawn {
                key: e.consensusKey.0,
            }
        }
        _ => return None,
    };
    Some((
        block,
        PositionedEvent {
            tx_index: log.transaction_index?,
            log_index: log.log_index?,
            event,
        },
    ))
}

/// The staking events of `logs`, grouped by L1 block (ascending).
pub fn by_block(logs: &[Log]) -> BTreeMap<u64, Vec<PositionedEvent>> {
    let mut out: BTreeMap<u64, Vec<PositionedEvent>> = BTreeMap::new();
    for (block, e) in logs.iter().filter_map(decode) {
        out.entry(block).or_default().push(e);
    }
    out
}
