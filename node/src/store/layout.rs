//! The store's layout mark, and the one upgrade a node does in place.
//!
//! `meta` `layout` names how the families are keyed. A new directory is marked with [`LAYOUT`]; a directory in an
//! older layout is upgraded at open when an upgrade exists, and refused otherwise (the operator starts on an
//! empty directory and the node syncs the chain from its peers).
//!
//! Layout 3 keys a rollup's batch by height first (`batches_by_height`: height ++ rollup id). Layout 2 keyed it by
//! rollup first (`batches`), so every decided height wrote one key at the end of each rollup's range: every table
//! file RocksDB flushed overlapped the whole family, and each compaction rewrote all of it. Under 64-entry bundles
//! that was a rewrite of a growing 20-80 MB every 12 s on each node, on every node at once, which held the fsyncs
//! of acknowledgements and decisions behind it (BENCHMARKS.md, the batch-key row). Keyed by height, a flushed file
//! follows the ones before it and moves down the levels without being rewritten.
//!
//! The upgrade copies `batches` into `batches_by_height` in bounded write batches, then marks layout 3, then drops
//! `batches`. Each step can be interrupted: the copy is redone from the start (it only overwrites the same keys
//! with the same values), and a leftover `batches` under a layout-3 mark is dropped at the next open.

use rocksdb::{IteratorMode, WriteBatch, WriteOptions, DB};

use crate::error::NodeError;

use super::{batch_key, family, latest_height, CF_BATCHES, CF_META, LAYOUT, LAYOUT_KEY};

/// The family that held batches in layout 2, keyed by rollup first.
pub(super) const CF_BATCHES_BY_ROLLUP: &str = "batches";
/// Keys copied per write batch during the upgrade: a few MiB of references at most.
const UPGRADE_CHUNK: usize = 4_096;

/// Reads the mark, upgrades layout 2 in place, marks a new directory, and refuses any other layout.
pub(super) fn settle(db: &mut DB, write: &WriteOptions) -> Result<(), NodeError> {
    let meta = family(db, CF_META)?;
    let found = match db.get_pinned_cf(meta, LAYOUT_KEY)? {
        Some(v) => u32::from_be_bytes(v.as_ref().try_into().map_err(|_| NodeError::Corrupt {
            cf: CF_META,
            detail: "layout is not 4 bytes".into(),
        })?),
        // Chain data without a layout mark predates the marks: layout 1.
        None if latest_height(db)? > 0 => 1,
        None => {
            db.put_cf_opt(meta, LAYOUT_KEY, LAYOUT.to_be_bytes(), write)?;
            LAYOUT
        }
    };
    match found {
        LAYOUT => {}
        2 => {
            let copied = copy_batches(db, write)?;
            db.put_cf_opt(
                family(db, CF_META)?,
                LAYOUT_KEY,
                LAYOUT.to_be_bytes(),
                write,
            )?;
            tracing::info!(batches = copied, "store upgraded from layout 2 to {LAYOUT}");
        }
        other => {
            return Err(NodeError::StoreLayout {
                found: other,
                expected: LAYOUT,
            })
        }
    }
    if db.cf_handle(CF_BATCHES_BY_ROLLUP).is_some() {
        db.drop_cf(CF_BATCHES_BY_ROLLUP)?;
    }
    Ok(())
}

/// Copies every layout-2 batch (rollup ++ height) to its layout-3 key (height ++ rollup). Returns how many.
fn copy_batches(db: &DB, write: &WriteOptions) -> Result<u64, NodeError> {
    let Some(old) = db.cf_handle(CF_BATCHES_BY_ROLLUP) else {
        return Ok(0);
    };
    let new = family(db, CF_BATCHES)?;
    let (mut wb, mut copied) = (WriteBatch::default(), 0u64);
    for item in db.iterator_cf(old, IteratorMode::Start) {
        let (k, v) = item?;
        let key: [u8; 16] = k.as_ref().try_into().map_err(|_| NodeError::Corrupt {
            cf: CF_BATCHES_BY_ROLLUP,
            detail: format!("a key of {} bytes, not rollup id and height", k.len()),
        })?;
        let rollup = u64::from_be_bytes(key[..8].try_into().unwrap_or_default());
        let height = u64::from_be_bytes(key[8..].try_into().unwrap_or_default());
        wb.put_cf(new, batch_key(rollup, height), v);
        copied += 1;
        if wb.len() >= UPGRADE_CHUNK {
            db.write_opt(std::mem::take(&mut wb), write)?;
        }
    }
    db.write_opt(wb, write)?;
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use rocksdb::Options;

    use super::*;
    use crate::config::StorageSection;
    use crate::store::{RocksStore, ALL_CFS, LATEST};

    /// A directory as a layout-2 build left it: the rollup-keyed family holding `rollups` × `heights` records.
    fn layout_2(path: &std::path::Path, rollups: u64, heights: u64) {
        let mut o = Options::default();
        o.create_if_missing(true);
        o.create_missing_column_families(true);
        let cfs = ALL_CFS.iter().chain([&CF_BATCHES_BY_ROLLUP]);
        let db = DB::open_cf(&o, path, cfs).unwrap();
        let meta = db.cf_handle(CF_META).unwrap();
        db.put_cf(meta, LATEST, heights.to_be_bytes()).unwrap();
        db.put_cf(meta, LAYOUT_KEY, 2u32.to_be_bytes()).unwrap();
        let old = db.cf_handle(CF_BATCHES_BY_ROLLUP).unwrap();
        for r in 1..=rollups {
            for h in 1..=heights {
                let mut k = [0u8; 16];
                k[..8].copy_from_slice(&r.to_be_bytes());
                k[8..].copy_from_slice(&h.to_be_bytes());
                db.put_cf(old, k, record(r, h)).unwrap();
            }
        }
    }

    fn record(rollup: u64, height: u64) -> Vec<u8> {
        [rollup.to_le_bytes(), height.to_le_bytes()].concat()
    }

    fn families(path: &std::path::Path) -> Vec<String> {
        DB::list_cf(&Options::default(), path).unwrap()
    }

    #[test]
    fn a_layout_2_directory_is_upgraded_in_place() {
        let dir = tempfile::tempdir().unwrap();
        // More records than one write batch of the upgrade takes.
        let (rollups, heights) = (3, 2 * UPGRADE_CHUNK as u64 / 3 + 7);
        layout_2(dir.path(), rollups, heights);
        let s = RocksStore::open(dir.path(), &StorageSection::for_tests(true)).unwrap();
        let new = s.cf(CF_BATCHES).unwrap();
        for r in 1..=rollups {
            for h in 1..=heights {
                let got = s.db.get_cf(new, batch_key(r, h)).unwrap();
                assert_eq!(got, Some(record(r, h)), "rollup {r} height {h}");
            }
        }
        let mark = s.db.get_cf(s.cf(CF_META).unwrap(), LAYOUT_KEY).unwrap();
        assert_eq!(mark, Some(LAYOUT.to_be_bytes().to_vec()));
        drop(s);
        assert!(!families(dir.path())
            .iter()
            .any(|f| f == CF_BATCHES_BY_ROLLUP));
        // Opens again as a layout-3 directory.
        RocksStore::open(dir.path(), &StorageSection::for_tests(true)).unwrap();
    }

    #[test]
    fn an_upgrade_interrupted_after_its_mark_drops_the_old_family_at_the_next_open() {
        let dir = tempfile::tempdir().unwrap();
        layout_2(dir.path(), 2, 10);
        {
            // The copy and the mark done, the drop not.
            let mut o = Options::default();
            o.create_missing_column_families(true);
            let cfs = ALL_CFS.iter().chain([&CF_BATCHES_BY_ROLLUP]);
            let db = DB::open_cf(&o, dir.path(), cfs).unwrap();
            copy_batches(&db, &WriteOptions::default()).unwrap();
            let meta = db.cf_handle(CF_META).unwrap();
            db.put_cf(meta, LAYOUT_KEY, LAYOUT.to_be_bytes()).unwrap();
        }
        let s = RocksStore::open(dir.path(), &StorageSection::for_tests(true)).unwrap();
        let got = s.db.get_cf(s.cf(CF_BATCHES).unwrap(), batch_key(2, 10));
        assert_eq!(got.unwrap(), Some(record(2, 10)));
        drop(s);
        assert!(!families(dir.path())
            .iter()
            .any(|f| f == CF_BATCHES_BY_ROLLUP));
    }

    #[test]
    fn batches_of_one_height_are_adjacent_and_heights_ascend() {
        // What keeps flushed files from overlapping: a later height's keys sort after every earlier height's.
        assert!(batch_key(u64::MAX, 5) < batch_key(0, 6));
        assert!(batch_key(1, 5) < batch_key(2, 5));
    }
}
