//! Reads a node's chain over gRPC for the run checker: every rollup's batches from height 1 up to a height,
//! through `StreamBatches` (catch-up from the node's store), with the header of each block.

use std::time::Duration;

use baton_proto::check::{ChainBlock, ChainEntry, NodeChain, RunHistory};
use baton_proto::client::{BatonClient, BundleStatus};
use baton_proto::types::{Hash, RollupId};
use eyre::{bail, Result, WrapErr};

/// Reads heights `1..=up_to` of every rollup in `rollups` from `endpoint` (named `node` in findings).
pub async fn read_chain(
    node: &str,
    endpoint: &str,
    rollups: &[RollupId],
    up_to: u64,
) -> Result<NodeChain> {
    let mut client = BatonClient::connect(endpoint.to_string())
        .await
        .wrap_err_with(|| format!("connect to {endpoint}"))?;
    let mut chain = NodeChain {
        node: node.to_string(),
        ..NodeChain::default()
    };
    if up_to == 0 {
        return Ok(chain);
    }
    for (i, rollup) in rollups.iter().enumerate() {
        let mut stream = client.stream_batches(*rollup, 1).await?;
        loop {
            let batch = match tokio::time::timeout(Duration::from_secs(30), stream.next()).await {
                Ok(Ok(Some(b))) => b,
                Ok(Ok(None)) => bail!("{node}: rollup {rollup} stream ended before height {up_to}"),
                Ok(Err(e)) => bail!("{node}: rollup {rollup}: {e}"),
                Err(_) => {
                    bail!("{node}: rollup {rollup} gave nothing for 30 s before height {up_to}")
                }
            };
            let height = batch.header.height;
            if i == 0 {
                chain.blocks.push(ChainBlock {
                    height,
                    hash: batch.block_hash,
                    header_hash: batch.header.hash(),
                    parent_hash: batch.header.parent_hash,
                });
            }
            chain
                .entries
                .extend(batch.entries.iter().map(|e| ChainEntry {
                    height,
                    rollup: *rollup,
                    bundle: e.bundle_hash,
                    index_in_bundle: e.index_in_bundle,
                }));
            if height >= up_to {
                break;
            }
        }
    }
    Ok(chain)
}

/// Reads every endpoint's chain up to its tip (the checker compares the heights they share), then asks `endpoints[0]` about each acknowledged
/// bundle found on no chain (expired or rejected ones are not lost) and fills `run.chains` and `run.dropped`.
pub async fn read_all(
    run: &mut RunHistory,
    endpoints: &[String],
    rollups: &[RollupId],
) -> Result<()> {
    for url in endpoints {
        let mut c = BatonClient::connect(url.clone()).await?;
        let tip = c.status().await?.latest_height;
        let chain = read_chain(&format!("node@{url}"), url, rollups, tip).await?;
        run.chains.push(chain);
    }
    let on_chain: std::collections::HashSet<Hash> = run
        .chains
        .iter()
        .flat_map(|c| c.entries.iter().map(|e| e.bundle))
        .collect();
    let mut c = BatonClient::connect(endpoints[0].clone()).await?;
    for s in run
        .submitted
        .iter()
        .filter(|s| s.acked && !on_chain.contains(&s.bundle))
    {
        match c.bundle_status(&s.bundle).await {
            Ok(BundleStatus::Expired { .. }) | Ok(BundleStatus::Rejected { .. }) => {
                run.dropped.insert(s.bundle);
            }
            // Included above the common height read, still pending, or unknown: the checker decides.
            _ => {}
        }
    }
    Ok(())
}
