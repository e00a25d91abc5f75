//! Stalls seen from inside the nodes: each node's Prometheus endpoint is read before and after a step, and the
//! report counts the storage writes (by operation) and the heights that took longer than a threshold in between.
//! A stall in the latency timeline can so be put down to a slow fsync or not.

use std::collections::BTreeMap;
use std::time::Duration;

use eyre::{bail, Result, WrapErr};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The histogram bucket bound (seconds) above which a storage write counts as slow: 51.2 ms.
pub const SLOW_WRITE_LE: &str = "0.0512";
/// The bucket bound above which a height counts as slow: 102.4 ms.
pub const SLOW_HEIGHT_LE: &str = "0.1024";
const WRITES: &str = "baton_storage_write_duration_seconds";
const HEIGHTS: &str = "baton_consensus_height_duration_seconds";
/// The longest a read of one endpoint may take (a node under test on shared cores can be slow to answer).
const TIMEOUT: Duration = Duration::from_secs(10);
/// The most a metrics page may hold.
const MAX_PAGE: u64 = 4 << 20;

/// Slow events counted by one node's histograms (totals since it started, or a difference of two readings).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stalls {
    /// Storage writes slower than [`SLOW_WRITE_LE`] seconds, by operation (`commit`, `persist_pending`, ...).
    pub slow_writes: BTreeMap<String, u64>,
    /// Heights slower than [`SLOW_HEIGHT_LE`] seconds.
    pub slow_heights: u64,
}

impl Stalls {
    /// What happened between `before` and `self`.
    pub fn since(&self, before: &Stalls) -> Stalls {
        Stalls {
            slow_writes: self
                .slow_writes
                .iter()
                .map(|(op, n)| {
                    let was = before.slow_writes.get(op).copied().unwrap_or(0);
                    (op.clone(), n.saturating_sub(was))
                })
                .filter(|(_, n)| *n > 0)
                .collect(),
            slow_heights: self.slow_heights.saturating_sub(before.slow_heights),
        }
    }

    /// From a Prometheus text page.
    pub fn parse(page: &str) -> Stalls {
        Stalls {
            slow_writes: above(page, WRITES, SLOW_WRITE_LE, "op"),
            slow_heights: above(page, HEIGHTS, SLOW_HEIGHT_LE, "").values().sum(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.slow_writes.is_empty() && self.slow_heights == 0
    }
}

/// Observations of histogram `metric` above the bucket bound `le`, per value of the label `by` ("" when the
/// series has none): the `+Inf` bucket's count minus the `le` bucket's.
fn above(page: &str, metric: &str, le: &str, by: &str) -> BTreeMap<String, u64> {
    let bucket = format!("{metric}_bucket{{");
    let mut at_le: BTreeMap<String, u64> = BTreeMap::new();
    let mut at_inf: BTreeMap<String, u64> = BTreeMap::new();
    for line in page.lines() {
        let Some(rest) = line.strip_prefix(&bucket) else {
            continue;
        };
        let Some((labels, value)) = rest.split_once("} ") else {
            continue;
        };
        let Ok(count) = value.trim().parse::<f64>() else {
            continue;
        };
        let mut bound = None;
        let mut key = String::new();
        for pair in labels.split(',') {
            let Some((k, v)) = pair.split_once('=') else {
                continue;
            };
            let v = v.trim_matches('"');
            if k == "le" {
                bound = Some(v);
            } else if k == by {
                key = v.to_string();
            }
        }
        match bound {
            Some("+Inf") => {
                at_inf.insert(key, count as u64);
            }
            Some(b) if b == le => {
                at_le.insert(key, count as u64);
            }
            _ => {}
        }
    }
    at_inf
        .into_iter()
        .map(|(k, inf)| {
            let below = at_le.get(&k).copied().unwrap_or(0);
            (k, inf.saturating_sub(below))
        })
        .collect()
}

/// Reads the node's counts from its metrics listener at `addr` (`host:port`).
pub async fn read(addr: &str) -> Result<Stalls> {
    Ok(Stalls::parse(&page(addr).await?))
}

/// A node's metrics page from its listener at `addr` (`host:port`): `GET /metrics`, answered 200 in the Prometheus
/// text format, within [`TIMEOUT`]. The node's tests read their metrics through this too.
pub async fn page(addr: &str) -> Result<String> {
    tokio::time::timeout(TIMEOUT, get(addr))
        .await
        .wrap_err_with(|| format!("{addr}/metrics did not answer within {TIMEOUT:?}"))?
}

/// `GET /metrics` over HTTP/1.0 (the listener closes the connection after the answer).
async fn get(addr: &str) -> Result<String> {
    let mut conn = tokio::net::TcpStream::connect(addr)
        .await
        .wrap_err_with(|| format!("connect to {addr}"))?;
    conn.write_all(format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut body = Vec::new();
    conn.take(MAX_PAGE).read_to_end(&mut body).await?;
    let text = String::from_utf8_lossy(&body);
    let Some((head, page)) = text.split_once("\r\n\r\n") else {
        bail!("{addr}/metrics: no HTTP header in the answer");
    };
    if !head.lines().next().is_some_and(|l| l.contains(" 200")) {
        bail!(
            "{addr}/metrics answered {}",
            head.lines().next().unwrap_or("")
        );
    }
    if !head
        .to_ascii_lowercase()
        .contains("content-type: text/plain; version=0.0.4")
    {
        bail!("{addr}/metrics is not in the Prometheus text format:\n{head}");
    }
    Ok(page.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = r#"# HELP baton_storage_write_duration_seconds Storage writes.
# TYPE baton_storage_write_duration_seconds histogram
baton_storage_write_duration_seconds_sum{op="commit"} 3.9
baton_storage_write_duration_seconds_count{op="commit"} 2792
baton_storage_write_duration_seconds_bucket{le="0.0256",op="commit"} 2788
baton_storage_write_duration_seconds_bucket{le="0.0512",op="commit"} 2790
baton_storage_write_duration_seconds_bucket{le="0.1024",op="commit"} 2790
baton_storage_write_duration_seconds_bucket{le="+Inf",op="commit"} 2792
baton_storage_write_duration_seconds_bucket{le="0.0512",op="persist_pending"} 1450
baton_storage_write_duration_seconds_bucket{le="+Inf",op="persist_pending"} 1450
baton_consensus_height_duration_seconds_bucket{le="0.1024"} 2746
baton_consensus_height_duration_seconds_bucket{le="+Inf"} 2782
baton_consensus_height_duration_seconds_count 2782
"#;

    #[test]
    fn slow_writes_and_heights_are_counted_above_their_bucket_and_differenced() {
        let now = Stalls::parse(PAGE);
        assert_eq!(now.slow_writes.get("commit"), Some(&2));
        assert_eq!(now.slow_writes.get("persist_pending"), Some(&0));
        assert_eq!(now.slow_heights, 36);
        let before = Stalls::parse(&PAGE.replace("} 2792", "} 2791").replace("} 2782", "} 2770"));
        let step = now.since(&before);
        assert_eq!(
            step.slow_writes,
            BTreeMap::from([("commit".to_string(), 1)])
        );
        assert_eq!(step.slow_heights, 12);
        assert!(!step.is_empty());
        assert!(now.since(&now).is_empty());
        assert_eq!(Stalls::parse("not a metrics page"), Stalls::default());
    }
}
