//! Which node a data directory belongs to: `data_dir/node_id`, written the
//! first time a node starts on the directory (with the shard manager, once
//! it is given its id) and checked at every start after.
//!
//! **A data directory serves one node id for its whole life.** Its Raft
//! votes and logs were written as that node; started under another id it
//! would vote with someone else's promises. A directory that lost the file
//! (wiped, or new) is a new directory: its replicas start in quarantine
//! (`shard::replica`), never as the node they used to be.

use anyhow::Context;
use shoal_types::NodeId;
use std::path::{Path, PathBuf};

fn id_file(data_dir: &Path) -> PathBuf {
    data_dir.join("node_id")
}

/// The node id recorded in `data_dir`, if any.
pub fn recorded(data_dir: &Path) -> anyhow::Result<Option<NodeId>> {
    let path = id_file(data_dir);
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Some(NodeId(
            text.trim()
                .parse()
                .with_context(|| format!("parsing {}", path.display()))?,
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Records `id` as the owner of `data_dir` (fsynced, with the folder, so a
/// power loss cannot leave a directory with data and no owner).
pub fn record(data_dir: &Path, id: NodeId) -> anyhow::Result<()> {
    use std::io::Write;
    let path = id_file(data_dir);
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    writeln!(file, "{id}")?;
    file.sync_all()?;
    std::fs::rename(&tmp, &path).with_context(|| format!("renaming {}", tmp.display()))?;
    std::fs::File::open(data_dir)?.sync_all()?;
    Ok(())
}

/// Refuses a directory recorded for another node.
pub fn ensure_same(data_dir: &Path, recorded: NodeId, configured: NodeId) -> anyhow::Result<()> {
    anyhow::ensure!(
        recorded == configured,
        "data directory {} belongs to node {recorded}, not node {configured}: give each node a data_dir of its own \
         (or remove node_id from the config to start as node {recorded})",
        data_dir.display()
    );
    Ok(())
}

/// At start with a static node id: records it in a directory that has no
/// owner yet, refuses one that belongs to another node.
pub fn claim(data_dir: &Path, id: NodeId) -> anyhow::Result<()> {
    match recorded(data_dir)? {
        Some(owner) => ensure_same(data_dir, owner, id),
        None => record(data_dir, id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_keeps_the_first_node_that_claimed_it() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(recorded(dir.path()).unwrap(), None);
        claim(dir.path(), NodeId(2)).unwrap();
        assert_eq!(recorded(dir.path()).unwrap(), Some(NodeId(2)));
        claim(dir.path(), NodeId(2)).unwrap();
        let refused = claim(dir.path(), NodeId(3)).unwrap_err().to_string();
        assert!(refused.contains("belongs to node 2, not node 3"), "{refused}");
        assert_eq!(recorded(dir.path()).unwrap(), Some(NodeId(2)));
    }
}
