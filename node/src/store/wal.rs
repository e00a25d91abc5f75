//! Keeping RocksDB's write-ahead log short: the families that hold its oldest files are flushed early.
//!
//! RocksDB keeps a log file until every column family with data in it has flushed that data to a table file. The
//! families that take the payload bytes (`mempool`, `undecided`, `blocks`) fill a memtable in seconds under load
//! and flush on their own. Those written a few bytes per height (`meta`, `headers`, `certs`, `nonces`, ...) or
//! rarely (`sets`, `dropped`, ...) take hours to fill one, and meanwhile each keeps every log file written since
//! its first unflushed write. The live log then grows to RocksDB's own bound (four times all memtables, about
//! 1 GiB here). At that bound RocksDB flushes every family at once and deletes the backlog of files; under
//! payload-heavy load the busy families stopped writes while it did, on every node in the same second
//! (BENCHMARKS.md, the WAL rows). A restart after a crash also replays the whole live log.
//!
//! [`WalUpkeep::look`] runs four times a second from the node's storage task ([`crate::retention`]). While the
//! live log is below `storage.wal_flush_bytes` it only measures. Past it, it flushes the family whose memtable
//! holds the oldest data, if that was written more than half that many log bytes ago, one family per look; those
//! it flushes hold little (a small table file each).
//!
//! RocksDB does not say which log file a family's memtable starts in, so the upkeep watches each family's
//! "super version", which changes whenever its memtable is switched (and when it flushes or compacts): the newest
//! log file at the first look that sees a memtable holding data under an unchanged super version bounds where
//! that data starts, to within one look. A busy family, whose version changes between most looks, is never
//! found holding old data; a quiet one is, and is flushed.

use std::path::Path;

use rocksdb::FlushOptions;

use crate::error::NodeError;

use super::{RocksStore, ALL_CFS};

/// How often the node's storage task looks ([`WalUpkeep::look`]): four times a second, so that the dozen quiet
/// families, one per look, are all flushed within about 3 s.
pub const LOOK_INTERVAL: std::time::Duration = std::time::Duration::from_millis(250);

/// One family as the upkeep last saw it.
#[derive(Clone, Copy, Debug, Default)]
struct Family {
    /// Its super version at the last look.
    version: u64,
    /// The newest log file when a look first saw its memtable holding data, with the same super version as at
    /// every look since; its data lies in that file or later ones (or at most one look earlier).
    since_log: Option<u64>,
}

/// What one look found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WalLook {
    /// Bytes of live write-ahead log files.
    pub live_bytes: u64,
    /// The family it asked RocksDB to flush, if any (one per look).
    pub flushed: Option<&'static str>,
}

/// The upkeep's memory of the families between looks.
#[derive(Clone, Debug)]
pub struct WalUpkeep {
    /// `storage.wal_flush_bytes`; 0 only measures.
    flush_bytes: u64,
    /// In [`ALL_CFS`] order.
    families: Vec<Family>,
}

impl WalUpkeep {
    /// Flushes once the live log passes `flush_bytes` (0: never; the look still measures).
    pub fn new(flush_bytes: u64) -> Self {
        WalUpkeep {
            flush_bytes,
            families: vec![Family::default(); ALL_CFS.len()],
        }
    }

    /// Measures the live log and, past the bound, flushes the family that keeps its oldest file alive (one per
    /// look: each flush switches a memtable and starts a new log file, which holds the node's writers for a moment,
    /// so a dozen at once made a stall that delayed heights). The flush runs in RocksDB's background threads;
    /// this returns once it is scheduled.
    pub fn look(&mut self, store: &RocksStore) -> Result<WalLook, NodeError> {
        let logs = log_files(store.db.path())?;
        let live_bytes = bytes_from(&logs, 0);
        let newest = logs.last().map(|(n, _)| *n).unwrap_or(0);
        let mut stalest: Option<(u64, usize)> = None;
        for (i, (name, seen)) in ALL_CFS.iter().zip(self.families.iter_mut()).enumerate() {
            let cf = store.cf(name)?;
            let property = |name| store.db.property_int_value_cf(cf, name);
            let entries = property(rocksdb::properties::NUM_ENTRIES_ACTIVE_MEM_TABLE)?.unwrap_or(0);
            let version = property(rocksdb::properties::CURRENT_SUPER_VERSION_NUMBER)?.unwrap_or(0);
            if entries == 0 {
                seen.since_log = None;
            } else if seen.since_log.is_none() || version != seen.version {
                seen.since_log = Some(newest);
            }
            seen.version = version;
            if let Some(since) = seen.since_log {
                if stalest.is_none_or(|(oldest, _)| since < oldest) {
                    stalest = Some((since, i));
                }
            }
        }
        let mut flushed = None;
        if let Some((since, i)) = stalest {
            if self.flush_bytes != 0
                && live_bytes >= self.flush_bytes
                && bytes_from(&logs, since) >= self.flush_bytes / 2
            {
                let name = ALL_CFS[i];
                let mut opts = FlushOptions::default();
                opts.set_wait(false);
                store.db.flush_cf_opt(store.cf(name)?, &opts)?;
                // Its next memtable is new: the next look that sees data in it starts counting again.
                self.families[i] = Family::default();
                flushed = Some(name);
            }
        }
        Ok(WalLook {
            live_bytes,
            flushed,
        })
    }
}

/// Bytes of the log files numbered `first` or later.
fn bytes_from(logs: &[(u64, u64)], first: u64) -> u64 {
    logs.iter()
        .filter(|(number, _)| *number >= first)
        .map(|(_, len)| len)
        .sum()
}

/// The database's write-ahead log files (`<number>.log`), by number, with their sizes.
pub(super) fn log_files(dir: &Path) -> Result<Vec<(u64, u64)>, NodeError> {
    let mut logs = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(number) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".log"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        // A file deleted between the listing and this call was obsolete: it is not live.
        match entry.metadata() {
            Ok(m) => logs.push((number, m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
    }
    logs.sort_unstable();
    Ok(logs)
}

/// Bytes of the live log files in `dir`.
#[cfg(test)]
pub(super) fn live_log_bytes(dir: &Path) -> u64 {
    bytes_from(&log_files(dir).unwrap(), 0)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::config::StorageSection;
    use baton_consensus::bundle::testing::bundle_of;
    use baton_consensus::bundle::BundleEntry;

    /// A submission of one 64 KiB entry from sender 5: sixteen fill a 1 MiB memtable.
    pub(in crate::store) fn large_submission(nonce: u64) -> baton_consensus::bundle::Bundle {
        bundle_of(
            5,
            nonce,
            vec![BundleEntry {
                rollup_id: 7,
                payload: vec![nonce as u8; 64 * 1024],
            }],
        )
    }

    /// Writes one forwarded bundle (a family written rarely), then 48 MiB of submissions into the `mempool` family
    /// with 1 MiB memtables, looking every 1 MiB; returns the live log at the end and the families flushed.
    fn run(flush_bytes: u64) -> (u64, Vec<&'static str>) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = StorageSection {
            write_buffer_bytes: 1 << 20,
            ..StorageSection::for_tests(false)
        };
        let s = RocksStore::open(dir.path(), &cfg).unwrap();
        let mut upkeep = WalUpkeep::new(flush_bytes);
        let early = bundle_of(4, 0, vec![]);
        s.put_forward(&early.hash(), &early).unwrap();
        let mut flushed = Vec::new();
        for nonce in 0..768u64 {
            let b = large_submission(nonce);
            s.persist_pending(&[(b.hash(), &b)]).unwrap();
            if nonce % 16 == 15 {
                flushed.extend(upkeep.look(&s).unwrap().flushed);
            }
        }
        // Flushes and the deletion of log files run in RocksDB's background threads: give them time.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut live = upkeep.look(&s).unwrap().live_bytes;
        while flush_bytes != 0 && live > 3 * flush_bytes && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(50));
            live = upkeep.look(&s).unwrap().live_bytes;
        }
        (live, flushed)
    }

    /// One write to a rarely written family keeps every later log file alive until RocksDB's own bound (here 128
    /// MiB: sixteen families of two 1 MiB memtables, times four); the upkeep flushes that family, and only it.
    #[test]
    fn flushing_the_families_behind_keeps_the_live_log_short() {
        let (live, flushed) = run(0);
        assert!(
            live >= 40 << 20,
            "without the upkeep, {live} bytes of log live after 48 MiB of writes: the control no longer shows the \
             problem"
        );
        assert!(flushed.is_empty(), "0 only measures: {flushed:?}");

        let (live, flushed) = run(4 << 20);
        assert!(
            live <= 12 << 20,
            "{live} bytes of log live after 48 MiB of writes with a 4 MiB flush bound"
        );
        assert!(flushed.contains(&"forward"), "flushed {flushed:?}");
        assert!(
            !flushed.contains(&"mempool"),
            "the family taking the writes flushes on its own: {flushed:?}"
        );
    }
}
