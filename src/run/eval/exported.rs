//! The label sets a rule exported, kept for its stale markers.
//!
//! Each set is packed ([`super::pack`]) into one arena, after its length, and
//! found through a hash table of arena offsets. A rule with tens of
//! thousands of results per evaluation keeps its memory in two allocations
//! instead of one per series: a separate allocation per packed set (an
//! `Arc<[u8]>` and its header, rounded up by the allocator) and a table of
//! 16-byte pointers cost `spillway run` about twice the bytes, and the many
//! small blocks kept the allocator from returning freed pages.
//!
//! An evaluation builds a new set from scratch, hashing each series once:
//! the new set shares the old one's hasher, so the same hash finds a series
//! in both.

use super::LabelHasher;
use crate::codec::remote_write::{put_varint, read_varint};
use hashbrown::HashTable;
use std::hash::BuildHasher;

#[derive(Clone, Default)]
pub struct Exported {
    /// `len (varint) packed` for each set, in insertion order.
    arena: Vec<u8>,
    /// Arena offset of each set, by the hash of its packed bytes.
    index: HashTable<usize>,
    hasher: LabelHasher,
}

/// The arena entry at `start`: the packed bytes after the length, and
/// where the next entry starts.
fn entry_at(arena: &[u8], start: usize) -> (&[u8], usize) {
    let (len, len_bytes) =
        read_varint(&arena[start..]).expect("an arena entry starts with its length");
    let at = start + len_bytes;
    let end = at + len as usize;
    (&arena[at..end], end)
}

fn push_entry(arena: &mut Vec<u8>, packed: &[u8]) {
    put_varint(arena, packed.len() as u64);
    arena.extend_from_slice(packed);
}

impl Exported {
    /// An empty set sized like `before` (`series` entries, about as many
    /// bytes as `before` held), hashing as `before` does.
    pub fn next_after(before: &Exported, series: usize) -> Exported {
        Exported {
            arena: Vec::with_capacity(before.arena.len()),
            index: HashTable::with_capacity(series),
            hasher: before.hasher.clone(),
        }
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The hash under which `packed` is found in this set and in every set
    /// made from it by [`Exported::next_after`].
    pub fn hash(&self, packed: &[u8]) -> u64 {
        self.hasher.hash_one(packed)
    }

    pub fn contains(&self, hash: u64, packed: &[u8]) -> bool {
        let arena = &self.arena;
        self.index
            .find(hash, |&start| entry_at(arena, start).0 == packed)
            .is_some()
    }

    /// Adds `packed` (whose [`Exported::hash`] is `hash`); `false` when it
    /// was there already.
    pub fn insert(&mut self, hash: u64, packed: &[u8]) -> bool {
        let Self {
            arena,
            index,
            hasher,
        } = self;
        let entry = index.entry(
            hash,
            |&start| entry_at(arena, start).0 == packed,
            |&start| hasher.hash_one(entry_at(arena, start).0),
        );
        match entry {
            hashbrown::hash_table::Entry::Occupied(_) => false,
            hashbrown::hash_table::Entry::Vacant(slot) => {
                slot.insert(arena.len());
                push_entry(arena, packed);
                true
            }
        }
    }

    /// The packed sets, in the order they were added.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let mut start = 0;
        std::iter::from_fn(move || {
            (start < self.arena.len()).then(|| {
                let (entry, next) = entry_at(&self.arena, start);
                start = next;
                entry
            })
        })
    }

    /// The sets of `self` that `other` lacks.
    pub fn missing_from<'a>(&'a self, other: &'a Exported) -> impl Iterator<Item = &'a [u8]> {
        self.iter()
            .filter(move |packed| !other.contains(other.hash(packed), packed))
    }
}

impl PartialEq for Exported {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.missing_from(other).next().is_none()
    }
}

impl std::fmt::Debug for Exported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set()
            .entries(self.iter().map(String::from_utf8_lossy))
            .finish()
    }
}

impl<T: AsRef<[u8]>> FromIterator<T> for Exported {
    fn from_iter<I: IntoIterator<Item = T>>(sets: I) -> Self {
        let mut exported = Exported::default();
        for packed in sets {
            let packed = packed.as_ref();
            exported.insert(exported.hash(packed), packed);
        }
        exported
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[&str]) -> Exported {
        items.iter().map(|s| s.as_bytes()).collect()
    }

    #[test]
    fn inserts_once_and_finds_what_it_holds() {
        let mut e = Exported::default();
        for (i, item) in ["a\u{ff}1", "", "b\u{ff}2", "a\u{ff}1"].iter().enumerate() {
            let h = e.hash(item.as_bytes());
            assert_eq!(e.insert(h, item.as_bytes()), i != 3, "{item:?}");
            assert!(e.contains(h, item.as_bytes()));
        }
        assert_eq!(e.len(), 3);
        assert!(!e.contains(e.hash(b"c"), b"c"));
        let held: Vec<&[u8]> = e.iter().collect();
        assert_eq!(held, ["a\u{ff}1".as_bytes(), b"", "b\u{ff}2".as_bytes()]);
    }

    #[test]
    fn a_set_made_after_another_finds_series_by_the_same_hash() {
        let before = set(&["x", "y", "z"]);
        let mut now = Exported::next_after(&before, 2);
        for item in ["y", "w"] {
            let h = before.hash(item.as_bytes());
            assert_eq!(before.contains(h, item.as_bytes()), item == "y");
            assert!(now.insert(h, item.as_bytes()));
        }
        let gone: Vec<&[u8]> = before.missing_from(&now).collect();
        assert_eq!(gone, [b"x", b"z"]);
    }

    #[test]
    fn long_sets_keep_their_length() {
        let items: Vec<Vec<u8>> = [0, 1, 127, 128, 300, 16_383, 16_384, 70_000]
            .iter()
            .map(|&n| vec![b'v'; n])
            .collect();
        let e: Exported = items.iter().collect();
        let held: Vec<&[u8]> = e.iter().collect();
        assert_eq!(held, items.iter().map(Vec::as_slice).collect::<Vec<_>>());
    }

    #[test]
    fn growth_keeps_every_entry_reachable() {
        let items: Vec<String> = (0..20_000).map(|i| format!("s\u{ff}{i}\u{ff}")).collect();
        let e: Exported = items.iter().collect();
        assert_eq!(e.len(), items.len());
        assert!(items
            .iter()
            .all(|s| e.contains(e.hash(s.as_bytes()), s.as_bytes())));
        assert_eq!(e.iter().count(), items.len());
    }

    #[test]
    fn equality_ignores_order_and_hasher() {
        assert_eq!(set(&["a", "b"]), set(&["b", "a"]));
        assert_ne!(set(&["a", "b"]), set(&["a"]));
        assert_ne!(set(&["a"]), set(&["a", "b"]));
        assert_ne!(set(&["a", "c"]), set(&["a", "b"]));
        assert_eq!(Exported::default(), set(&[]));
    }
}
