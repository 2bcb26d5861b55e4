//! The on-disk format of a shard snapshot, and where snapshot files live.
//!
//! A snapshot file holds every data entry of one shard (user data only; the
//! state-machine metadata travels as openraft's `SnapshotMeta`):
//!
//! ```text
//! "SHOALSN1"                       magic
//! { klen:u32be key vlen:u32be value }*   keys without the shard prefix, in order
//! 0xFFFFFFFF count:u64be           trailer: proves the file is complete
//! ```

use crate::raft::types::SnapshotMeta;
use serde::{Deserialize, Serialize};
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"SHOALSN1";
const TRAILER: u32 = u32::MAX;

/// What `raft_meta` remembers about the current snapshot of a shard.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StoredSnapshotInfo {
    pub meta: SnapshotMeta,
    pub file_name: String,
}

/// Writes a snapshot file from `(key, value)` pairs; returns the entry count.
pub fn write_snapshot_file(
    path: &Path,
    entries: &mut dyn Iterator<Item = io::Result<(Vec<u8>, Vec<u8>)>>,
) -> io::Result<u64> {
    let file = File::create(path)?;
    let mut out = BufWriter::new(file);
    out.write_all(MAGIC)?;
    let mut count = 0u64;
    for entry in entries {
        let (key, value) = entry?;
        write_chunk(&mut out, &key)?;
        write_chunk(&mut out, &value)?;
        count += 1;
    }
    out.write_all(&TRAILER.to_be_bytes())?;
    out.write_all(&count.to_be_bytes())?;
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    Ok(count)
}

fn write_chunk(out: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
    let len = u32::try_from(bytes.len())
        .ok()
        .filter(|len| *len != TRAILER)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "snapshot entry too large"))?;
    out.write_all(&len.to_be_bytes())?;
    out.write_all(bytes)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Reads every entry of a snapshot file, checking magic and trailer.
pub fn read_snapshot_file(file: &mut File, mut visit: impl FnMut(Vec<u8>, Vec<u8>)) -> io::Result<u64> {
    use std::io::Seek;
    file.seek(io::SeekFrom::Start(0))?;
    let mut input = BufReader::new(file);
    let mut magic = [0u8; 8];
    input.read_exact(&mut magic)?;
    if &magic != MAGIC {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "not a shoal snapshot file"));
    }
    let mut count = 0u64;
    loop {
        let len = read_u32(&mut input)?;
        if len == TRAILER {
            let mut expected = [0u8; 8];
            input.read_exact(&mut expected)?;
            if u64::from_be_bytes(expected) != count {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "snapshot entry count mismatch",
                ));
            }
            return Ok(count);
        }
        let key = read_exact_vec(&mut input, len)?;
        let value_len = read_u32(&mut input)?;
        let value = read_exact_vec(&mut input, value_len)?;
        visit(key, value);
        count += 1;
    }
}

fn read_u32(input: &mut impl Read) -> io::Result<u32> {
    let mut buf = [0u8; 4];
    input.read_exact(&mut buf)?;
    Ok(u32::from_be_bytes(buf))
}

/// Largest key or value a snapshot may hold; anything bigger means a
/// corrupt file, and must not become a giant allocation.
const MAX_CHUNK_BYTES: u32 = 64 << 20;

fn read_exact_vec(input: &mut impl Read, len: u32) -> io::Result<Vec<u8>> {
    if len > MAX_CHUNK_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("snapshot entry of {len} bytes"),
        ));
    }
    let mut buf = vec![0u8; len as usize];
    input.read_exact(&mut buf)?;
    Ok(buf)
}

/// The folder holding one shard's snapshot files.
#[derive(Clone, Debug)]
pub struct SnapshotDir {
    dir: PathBuf,
}

impl SnapshotDir {
    pub fn new(dir: PathBuf) -> io::Result<SnapshotDir> {
        fs::create_dir_all(&dir)?;
        // The folder's own entry must survive a power loss too.
        if let Some(parent) = dir.parent() {
            sync_dir(parent)?;
        }
        Ok(SnapshotDir { dir })
    }

    /// Makes the folder's entries durable: a file created (or deleted) here
    /// survives a power loss only once its folder is fsynced. Call after a
    /// new file is synced and before anything durable names it.
    pub fn sync(&self) -> io::Result<()> {
        sync_dir(&self.dir)
    }

    pub fn path_of(&self, file_name: &str) -> PathBuf {
        self.dir.join(file_name)
    }

    /// A fresh file name; unique even for two snapshots of the same log id.
    pub fn new_file_name(&self, last_index: u64) -> String {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        format!("{last_index:020}-{nanos}.snap")
    }

    /// Deletes every snapshot file but `keep`. Files still being streamed to
    /// a peer stay readable through their open handles.
    pub fn remove_all_but(&self, keep: &str) -> io::Result<()> {
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            if entry.file_name().to_string_lossy() != keep {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_file_round_trips_and_detects_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.snap");
        let pairs = vec![(b"a".to_vec(), b"1".to_vec()), (b"b".to_vec(), vec![])];
        let mut iter = pairs.clone().into_iter().map(Ok);
        assert_eq!(write_snapshot_file(&path, &mut iter).unwrap(), 2);

        let mut seen = Vec::new();
        let mut file = File::open(&path).unwrap();
        read_snapshot_file(&mut file, |k, v| seen.push((k, v))).unwrap();
        assert_eq!(seen, pairs);

        let bytes = fs::read(&path).unwrap();
        fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        let mut file = File::open(&path).unwrap();
        assert!(read_snapshot_file(&mut file, |_, _| {}).is_err());
    }
}
