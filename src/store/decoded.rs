//! Parts kept decoded between reads, least recently used first out, within a byte budget.
//!
//! A fine-tune's delta parts decode against its base's parts, a bf16 copy is cast from its fp32
//! source, and a re-upload or a second format of one model (`pytorch_model.bin` beside
//! `model.safetensors`) is the same parts again: a process that restores, verifies or ingests
//! several files of one family meets the same parts many times. A part found here is neither
//! fetched nor decoded again.
//!
//! Keeping costs fresh memory (slow to fault in), so a read keeps what it decodes only when it
//! will meet it again: a restore whose files share parts, `verify`'s walk over every file, or
//! any read through a handle made a session by [`crate::store::Store::keep_decoded`] (a server,
//! the benchmark's one-handle restore). A one-shot restore of one fine-tune keeps nothing.
//!
//! Entries remember whether their bytes were checked against the part's BLAKE3. A read that
//! checks every part (ranges, the second look after a failed sha256, ingest reading a base) uses
//! checked entries only; a read that checks the whole file's sha256 instead may use any, and
//! [`Decoded::clear`] drops them all when such a check fails.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use bytes::Bytes;

use crate::store::layout::Part;

/// The default budget: room for a small model's every part (MiniLM's fp32 base is 91 MB),
/// or for the working set of a restore of a large one. `ZIPLLM_DECODED_CACHE_MIB` changes it
/// (0 turns keeping off).
pub const DEFAULT_BUDGET: u64 = 128 << 20;

type Key = (String, u64);

/// Decoded parts by (pack, offset).
pub struct Decoded {
    budget: u64,
    inner: Mutex<Lru>,
}

#[derive(Default)]
struct Lru {
    entries: HashMap<Key, Entry>,
    /// Keys by last use.
    order: BTreeMap<u64, Key>,
    bytes: u64,
    clock: u64,
}

struct Entry {
    bytes: Bytes,
    checked: bool,
    used: u64,
}

fn key(part: &Part) -> Key {
    (part.pack.clone(), part.offset)
}

impl Decoded {
    /// Keeps at most `budget` bytes (0: nothing).
    pub fn new(budget: u64) -> Decoded {
        Decoded {
            budget,
            inner: Mutex::new(Lru::default()),
        }
    }

    /// The budget from `ZIPLLM_DECODED_CACHE_MIB`, else [`DEFAULT_BUDGET`].
    pub fn from_env() -> Decoded {
        let budget = std::env::var("ZIPLLM_DECODED_CACHE_MIB")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map_or(DEFAULT_BUDGET, |mib| mib.saturating_mul(1 << 20));
        Decoded::new(budget)
    }

    /// The budget in bytes.
    pub fn budget(&self) -> u64 {
        self.budget
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lru> {
        // Nothing here can be left half-done by a panic: a poisoned lock is still consistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The decoded bytes of `part`, if kept (and checked, when `checked` is asked for).
    pub fn get(&self, part: &Part, checked: bool) -> Option<Bytes> {
        if self.budget == 0 {
            return None;
        }
        let mut lru = self.lock();
        let lru = &mut *lru;
        lru.clock += 1;
        let e = lru.entries.get_mut(&key(part))?;
        if checked && !e.checked {
            return None;
        }
        lru.order.remove(&e.used);
        e.used = lru.clock;
        lru.order.insert(e.used, key(part));
        Some(e.bytes.clone())
    }

    /// Keeps `bytes` as `part`'s decoded bytes, dropping the least recently used to stay
    /// within the budget. Bytes of the wrong length are not kept.
    pub fn put(&self, part: &Part, bytes: &Bytes, checked: bool) {
        let len = bytes.len() as u64;
        if self.budget == 0 || len != part.raw_len || len > self.budget / 4 {
            return;
        }
        let mut lru = self.lock();
        let lru = &mut *lru;
        lru.clock += 1;
        let used = lru.clock;
        if let Some(old) = lru.entries.insert(
            key(part),
            Entry {
                bytes: bytes.clone(),
                checked,
                used,
            },
        ) {
            lru.order.remove(&old.used);
            lru.bytes -= old.bytes.len() as u64;
        }
        lru.order.insert(used, key(part));
        lru.bytes += len;
        while lru.bytes > self.budget {
            let Some((_, k)) = lru.order.pop_first() else {
                break;
            };
            if let Some(e) = lru.entries.remove(&k) {
                lru.bytes -= e.bytes.len() as u64;
            }
        }
    }

    /// Drops every entry.
    pub fn clear(&self) {
        *self.lock() = Lru::default();
    }

    /// Bytes kept now.
    pub fn kept(&self) -> u64 {
        self.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(i: u64, raw_len: u64) -> Part {
        Part {
            pack: "p".into(),
            offset: i,
            len: 1,
            raw_len,
            blake3: String::new(),
            delta: false,
        }
    }

    #[test]
    fn least_recently_used_go_first() {
        let d = Decoded::new(400);
        for i in 0..4 {
            d.put(&part(i, 100), &Bytes::from(vec![i as u8; 100]), i % 2 == 0);
        }
        assert_eq!(d.kept(), 400);
        // Touch 0, then a fifth entry pushes out 1, the oldest untouched.
        assert!(d.get(&part(0, 100), false).is_some());
        d.put(&part(4, 100), &Bytes::from(vec![4; 100]), true);
        assert!(d.get(&part(1, 100), false).is_none());
        assert_eq!(d.get(&part(0, 100), true).as_deref(), Some(&[0u8; 100][..]));
        // Unchecked entries serve unchecked reads only.
        assert!(d.get(&part(3, 100), true).is_none());
        assert!(d.get(&part(3, 100), false).is_some());
        assert_eq!(d.kept(), 400);
        // Wrong lengths and entries over a quarter of the budget are not kept.
        d.put(&part(9, 100), &Bytes::from(vec![0; 99]), true);
        d.put(&part(8, 101), &Bytes::from(vec![0; 101]), true);
        assert!(d.get(&part(9, 100), false).is_none() && d.get(&part(8, 101), false).is_none());
        d.clear();
        assert_eq!(d.kept(), 0);
        let off = Decoded::new(0);
        off.put(&part(0, 0), &Bytes::new(), true);
        assert!(off.get(&part(0, 0), false).is_none());
    }
}
