//! The inode table: the FUSE inode numbers this filesystem hands to the kernel, each mapped to
//! where its file lives in the backing directory (parent inode + name, so renaming a
//! directory moves its whole subtree with one update) and to the backing file's own inode
//! number, which is how the undo journal recognises a file across renames.
//!
//! It never touches the disk itself except in [`Inodes::rescan`], which rebuilds every
//! location from the backing tree after a power cut has moved files behind its back.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// FUSE's root inode.
pub(crate) const ROOT: u64 = 1;
/// Pseudo-parent of entries parked in the stash (unlinked or replaced, not yet durably so).
/// Never handed to the kernel: FUSE inode 0 does not exist.
pub(crate) const STASH: u64 = 0;
/// Name of the stash directory at the root of the backing dir, hidden from the mount.
pub(crate) const STASH_NAME: &str = ".faultfs-stash";
/// Deepest path resolved: a loop in the parent links would otherwise never end.
const MAX_DEPTH: usize = 4096;

#[derive(Clone, Debug)]
struct Node {
    parent: u64,
    name: OsString,
    backing: u64,
}

/// FUSE inode -> location; backing inode -> FUSE inode.
#[derive(Debug)]
pub(crate) struct Inodes {
    root: PathBuf,
    stash: PathBuf,
    by_fuse: HashMap<u64, Node>,
    by_backing: HashMap<u64, u64>,
    next: u64,
}

impl Inodes {
    pub(crate) fn new(root: &Path, root_backing_ino: u64) -> Self {
        let mut by_fuse = HashMap::new();
        by_fuse.insert(
            ROOT,
            Node {
                parent: ROOT,
                name: OsString::new(),
                backing: root_backing_ino,
            },
        );
        let mut by_backing = HashMap::new();
        by_backing.insert(root_backing_ino, ROOT);
        Self {
            root: root.to_path_buf(),
            stash: root.join(STASH_NAME),
            by_fuse,
            by_backing,
            next: ROOT + 1,
        }
    }

    pub(crate) fn stash_dir(&self) -> &Path {
        &self.stash
    }

    /// Records that `name` in `parent` is the backing file `backing`; returns its FUSE inode
    /// (the existing one if the backing file is known: it was renamed or looked up before).
    pub(crate) fn register(&mut self, parent: u64, name: &OsStr, backing: u64) -> u64 {
        if let Some(&ino) = self.by_backing.get(&backing)
            && let Some(node) = self.by_fuse.get_mut(&ino)
        {
            if ino != ROOT {
                node.parent = parent;
                node.name = name.to_os_string();
            }
            return ino;
        }
        let ino = self.next;
        self.next += 1;
        self.by_fuse.insert(
            ino,
            Node {
                parent,
                name: name.to_os_string(),
                backing,
            },
        );
        self.by_backing.insert(backing, ino);
        ino
    }

    /// Moves `ino` to a new location (rename, stash, un-stash).
    pub(crate) fn relocate(&mut self, ino: u64, parent: u64, name: &OsStr) {
        if let Some(node) = self.by_fuse.get_mut(&ino) {
            node.parent = parent;
            node.name = name.to_os_string();
        }
    }

    /// Forgets `ino` (its backing file is gone for good).
    pub(crate) fn remove(&mut self, ino: u64) {
        if let Some(node) = self.by_fuse.remove(&ino) {
            self.by_backing.remove(&node.backing);
        }
    }

    pub(crate) fn backing_ino(&self, ino: u64) -> Option<u64> {
        self.by_fuse.get(&ino).map(|n| n.backing)
    }

    pub(crate) fn by_backing(&self, backing: u64) -> Option<u64> {
        self.by_backing.get(&backing).copied()
    }

    /// The path of `ino` relative to the mount root (stashed entries under the stash name).
    pub(crate) fn rel_path(&self, ino: u64) -> Option<PathBuf> {
        let mut names = Vec::new();
        let mut cur = ino;
        for _ in 0..MAX_DEPTH {
            if cur == ROOT {
                return Some(names.iter().rev().collect());
            }
            if cur == STASH {
                names.push(OsString::from(STASH_NAME));
                return Some(names.iter().rev().collect());
            }
            let node = self.by_fuse.get(&cur)?;
            names.push(node.name.clone());
            cur = node.parent;
        }
        None
    }

    /// The backing path of `ino`.
    pub(crate) fn path(&self, ino: u64) -> Option<PathBuf> {
        self.rel_path(ino).map(|rel| self.root.join(rel))
    }

    /// The backing path of `name` in directory `parent`.
    pub(crate) fn child_path(&self, parent: u64, name: &OsStr) -> Option<PathBuf> {
        if parent == STASH {
            return Some(self.stash.join(name));
        }
        self.path(parent).map(|p| p.join(name))
    }

    /// Rebuilds every location from the backing tree (after a power cut moved files): known
    /// backing files keep their FUSE inode at their new place, new ones get one, and inodes
    /// whose backing file no longer exists are forgotten (the kernel gets ENOENT for them).
    pub(crate) fn rescan(&mut self) -> io::Result<()> {
        let root_backing = self.by_fuse.get(&ROOT).map(|n| n.backing);
        let mut seen = HashMap::new();
        if let Some(b) = root_backing {
            seen.insert(b, ROOT);
        }
        let mut stack = vec![(ROOT, self.root.clone())];
        while let Some((dir_ino, dir_path)) = stack.pop() {
            for entry in std::fs::read_dir(&dir_path)? {
                let entry = entry?;
                let name = entry.file_name();
                if dir_ino == ROOT && name == STASH_NAME {
                    continue;
                }
                let meta = entry.metadata()?;
                let ino = self.register(dir_ino, &name, meta.ino());
                seen.insert(meta.ino(), ino);
                if meta.is_dir() {
                    stack.push((ino, entry.path()));
                }
            }
        }
        let gone: Vec<u64> = self
            .by_fuse
            .iter()
            .filter(|(_, n)| !seen.contains_key(&n.backing))
            .map(|(ino, _)| *ino)
            .collect();
        for ino in gone {
            self.remove(ino);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renaming_a_directory_moves_its_subtree() {
        let mut t = Inodes::new(Path::new("/b"), 10);
        let d = t.register(ROOT, OsStr::new("d"), 11);
        let f = t.register(d, OsStr::new("f"), 12);
        assert_eq!(t.path(f), Some(PathBuf::from("/b/d/f")));
        t.relocate(d, ROOT, OsStr::new("e"));
        assert_eq!(t.path(f), Some(PathBuf::from("/b/e/f")));
        t.relocate(f, STASH, OsStr::new("s1"));
        assert_eq!(t.rel_path(f), Some(PathBuf::from(".faultfs-stash/s1")));
        // The same backing file looked up under another name keeps its inode.
        assert_eq!(t.register(ROOT, OsStr::new("g"), 12), f);
        assert_eq!(t.path(f), Some(PathBuf::from("/b/g")));
    }
}
