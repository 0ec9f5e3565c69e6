/*!
The pulse counts of the `c` meters, kept across decoders and across restarts.

On the ESP the counts live in RTC memory and are copied to flash at restart and midnight; a meter's
decoder here is made afresh for every connection and on `sensor53 r`, so the count cannot live in
the decoder. It lives here, one store for the process (as the ESP's `pulse_counter[]` is one array),
keyed by meter index, and is saved to `counters.json` in the state directory (`--state-dir`, or
beside `--spool`) with the same guards as the script's `p:` variables ([`crate::hooks::state`]:
private directory and file, no symbolic link followed, atomic rename). Saved at most every
[`SAVE_EVERY`] while pulses come, when a decoder goes (link drop, `sensor53 r`, shutdown) and when
`sensor53 c<n> <v>` sets a count. Without a state directory the counts start at 0 on every run.
*/

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::hooks::state::{self, StateError, Values};
use crate::script::model::{Decoding, MeterIndex, Script};

/// The file in the state directory.
pub const COUNTERS_FILE: &str = "counters.json";
/// While pulses come, the counts are written at most this often (a crash loses at most this much).
pub const SAVE_EVERY: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Inner {
    counts: BTreeMap<MeterIndex, u64>,
    /// The `c` meters in index order: `sensor53 c1` is the first.
    counters: Vec<MeterIndex>,
    dir: Option<PathBuf>,
    dirty: bool,
    saved_at: Option<Instant>,
}

#[derive(Default)]
pub struct CounterStore {
    inner: Mutex<Inner>,
}

/// The process's store (what [`crate::decode::decoder_for`] gives every counter decoder).
pub fn global() -> &'static CounterStore {
    static STORE: OnceLock<CounterStore> = OnceLock::new();
    STORE.get_or_init(CounterStore::default)
}

impl CounterStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic elsewhere while holding the lock leaves plain numbers: still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Start a run: the script's counter meters, and the counts saved in `dir` (if any). A file that
    /// cannot be trusted or read is an error, and the counts start at 0.
    pub fn open(&self, script: &Script, dir: Option<&Path>) -> Result<(), StateError> {
        let mut inner = self.lock();
        *inner = Inner {
            counters: script
                .meters
                .iter()
                .filter(|m| matches!(m.decoding, Decoding::Counter { .. }))
                .map(|m| m.index)
                .collect(),
            dir: dir.map(Path::to_path_buf),
            ..Inner::default()
        };
        inner.counters.sort_unstable();
        let Some(dir) = dir else { return Ok(()) };
        if inner.counters.is_empty() {
            return Ok(());
        }
        let saved = state::load_file(dir, COUNTERS_FILE)?;
        for (key, value) in saved {
            let (Ok(meter), Some(count)) = (key.parse::<MeterIndex>(), value.as_u64()) else {
                continue;
            };
            if inner.counters.contains(&meter) {
                inner.counts.insert(meter, count);
            }
        }
        Ok(())
    }

    pub fn get(&self, meter: MeterIndex) -> u64 {
        self.lock().counts.get(&meter).copied().unwrap_or(0)
    }

    /// One pulse more; the new count. Saves when the last save is [`SAVE_EVERY`] old.
    pub fn increment(&self, meter: MeterIndex, now: Instant) -> u64 {
        let mut inner = self.lock();
        let count = inner.counts.entry(meter).or_insert(0);
        *count += 1;
        let count = *count;
        inner.dirty = true;
        if inner.saved_at.is_none_or(|t| now >= t + SAVE_EVERY) {
            inner.saved_at = Some(now);
            save(&mut inner);
        }
        count
    }

    /// `sensor53 c<n> <v>`: set counter n (1-based, in meter order); the meter it belongs to, or
    /// `None` when the script has no n-th counter.
    pub fn set_counter(&self, n: u32, value: u64) -> Option<MeterIndex> {
        let mut inner = self.lock();
        let meter = *inner
            .counters
            .get(usize::try_from(n).ok()?.checked_sub(1)?)?;
        inner.counts.insert(meter, value);
        inner.dirty = true;
        save(&mut inner);
        Some(meter)
    }

    /// Write the counts if they changed since the last save.
    pub fn flush(&self) {
        save(&mut self.lock());
    }
}

fn save(inner: &mut Inner) {
    if !inner.dirty {
        return;
    }
    let Some(dir) = inner.dir.clone() else {
        return;
    };
    let values: Values = inner
        .counts
        .iter()
        .map(|(m, c)| (m.to_string(), serde_json::Value::from(*c)))
        .collect();
    match state::save_file(&dir, COUNTERS_FILE, &values) {
        Ok(()) => inner.dirty = false,
        // Said once per failure streak; the counts stay in memory and are tried again.
        Err(e) => tracing::warn!("pulse counts not saved: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(text: &str) -> Script {
        crate::script::compile(text.as_bytes())
            .script
            .expect("compiles")
    }

    const TWO: &str = ">D\n>B\n>M 2\n+1,1,c,0,10,H2O\n+2,4,c,0,-50,GAS\n\
        1,1-0:1.8.0*255(@1000,Water,cbm,Count,3\n2,1-0:1.8.0*255(@100,Gas,cbm,Count,2\n#\n";

    #[test]
    fn counts_survive_a_new_store_through_the_state_file() {
        let dir = tempfile::tempdir().unwrap();
        let s = script(TWO);
        let store = CounterStore::default();
        store.open(&s, Some(dir.path())).unwrap();
        let t = Instant::now();
        assert_eq!(store.increment(2, t), 1);
        assert_eq!(store.increment(2, t), 2);
        store.flush();
        let again = CounterStore::default();
        again.open(&s, Some(dir.path())).unwrap();
        assert_eq!((again.get(1), again.get(2)), (0, 2));
    }

    #[test]
    fn sensor53_c2_sets_the_second_counter_and_is_saved_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let s = script(TWO);
        let store = CounterStore::default();
        store.open(&s, Some(dir.path())).unwrap();
        assert_eq!(store.set_counter(2, 4711), Some(2));
        assert_eq!(store.set_counter(3, 1), None);
        assert_eq!(store.set_counter(0, 1), None);
        let again = CounterStore::default();
        again.open(&s, Some(dir.path())).unwrap();
        assert_eq!(again.get(2), 4711);
    }

    #[test]
    fn a_state_file_behind_a_symbolic_link_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let other = dir.path().join("elsewhere.json");
        std::fs::write(&other, "{\"1\": 99}").unwrap();
        let state_dir = dir.path().join("state");
        std::fs::create_dir(&state_dir).unwrap();
        std::os::unix::fs::symlink(&other, state_dir.join(COUNTERS_FILE)).unwrap();
        let store = CounterStore::default();
        let e = store.open(&script(TWO), Some(&state_dir)).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert_eq!(store.get(1), 0);
    }
}
