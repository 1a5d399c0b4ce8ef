//! What a checkpoint needs from a running `create`: a way to pause chunk storing, and the
//! chunks each unfinished input has stored so far.
//!
//! A checkpoint commits every segment written until then, so it must reference every
//! chunk in them (borg's `check` reports unreferenced objects). Inputs are read in
//! parallel, so at a checkpoint several files may be half stored, and finished files may
//! wait for their turn in the item stream. Each of them goes into the checkpoint as a part
//! item (`PATH.borg_part_N` with the chunks stored since its last part), as borg writes
//! one for the file it is reading.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::format::objects::{ChunkRef, Item};

/// The inputs being stored, and a gate for their batches.
#[derive(Default)]
pub struct Inflight {
    state: Mutex<State>,
    cv: Condvar,
}

#[derive(Default)]
struct State {
    paused: bool,
    /// Batches being stored now.
    busy: usize,
    next: u64,
    inputs: HashMap<u64, Input>,
}

struct Input {
    /// The file's item without chunks: what its part items copy.
    template: Item,
    /// Stored batches by their index in the input.
    batches: BTreeMap<usize, Vec<ChunkRef>>,
    /// Chunks already in part items.
    parted: usize,
    /// Part items written.
    parts: u64,
}

impl Input {
    fn refs(&self) -> Vec<ChunkRef> {
        self.batches.values().flatten().copied().collect()
    }

    /// The part item for the chunks stored since the last one, if any.
    fn next_part(&mut self) -> Option<Item> {
        let refs = self.refs();
        let new = refs.get(self.parted..).filter(|r| !r.is_empty())?;
        self.parts += 1;
        self.parted = refs.len();
        let mut item = self.template.clone();
        item.path
            .extend_from_slice(format!(".borg_part_{}", self.parts).as_bytes());
        item.part = Some(self.parts);
        item.size = Some(new.iter().map(|c| u64::from(c.size)).sum());
        item.chunks = Some(new.to_vec());
        Some(item)
    }
}

/// One input's handle for recording its stored batches.
#[derive(Clone)]
pub struct Tracker {
    inflight: Arc<Inflight>,
    id: u64,
}

impl Inflight {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("in-flight lock")
    }

    /// Starts tracking an input whose part items would copy `template`.
    pub fn register(self: &Arc<Self>, mut template: Item) -> Tracker {
        template.chunks = None;
        let mut st = self.lock();
        let id = st.next;
        st.next += 1;
        st.inputs.insert(
            id,
            Input {
                template,
                batches: BTreeMap::new(),
                parted: 0,
                parts: 0,
            },
        );
        Tracker {
            inflight: self.clone(),
            id,
        }
    }

    /// Waits until no batch is being stored and keeps new ones from starting, until
    /// [`resume`](Self::resume). Inputs dispatch their batches in order, so each input's
    /// stored batches are then a prefix of it.
    pub fn pause(&self) {
        let mut st = self.lock();
        st.paused = true;
        while st.busy > 0 {
            st = self.cv.wait(st).expect("in-flight lock");
        }
    }

    pub fn resume(&self) {
        self.lock().paused = false;
        self.cv.notify_all();
    }

    /// While paused: a part item for every input with chunks stored since its last part,
    /// in the order the inputs started.
    pub fn part_items(&self) -> Vec<Item> {
        let mut st = self.lock();
        debug_assert!(st.paused && st.busy == 0);
        let mut ids: Vec<u64> = st.inputs.keys().copied().collect();
        ids.sort_unstable();
        ids.into_iter()
            .filter_map(|id| st.inputs.get_mut(&id).and_then(Input::next_part))
            .collect()
    }

    /// Stops tracking a finished input whose item goes into the stream now. If it went
    /// into part items, returns the last part (the chunks after the last checkpoint, so
    /// that the parts concatenate to the whole file, as borg's do) and the number of parts.
    pub fn finish(&self, id: u64) -> (Option<Item>, u64) {
        match self.lock().inputs.remove(&id) {
            Some(mut input) if input.parts > 0 => {
                let last = input.next_part();
                (last, input.parts)
            }
            _ => (None, 0),
        }
    }
}

impl Tracker {
    /// The input's id, for [`Inflight::finish`].
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Starts storing batch `index` of the input, waiting while a checkpoint is being
    /// written. Call it on the thread that reads the input, never on the pool: a pool
    /// thread blocked here could hold half of a batch the checkpoint waits for.
    pub fn begin(&self, index: usize) -> Batch {
        let inflight = &self.inflight;
        let mut st = inflight.lock();
        while st.paused {
            st = inflight.cv.wait(st).expect("in-flight lock");
        }
        st.busy += 1;
        Batch {
            tracker: self.clone(),
            index,
        }
    }

    /// Stores batch `index` with `store` between [`begin`](Self::begin) and
    /// [`Batch::end`].
    pub fn store<E>(
        &self,
        index: usize,
        store: impl FnOnce() -> Result<Vec<ChunkRef>, E>,
    ) -> Result<Vec<ChunkRef>, E> {
        let batch = self.begin(index);
        let r = store();
        batch.end(&r);
        r
    }
}

/// Stores several whole inputs at once with `store`, which returns their chunks one input
/// after the other, `counts[i]` of them for `trackers[i]`: each input's one batch. A
/// checkpoint waits until they are stored, as for any batch; call it on the reading thread.
pub fn store_inputs<E>(
    trackers: &[Tracker],
    counts: &[usize],
    store: impl FnOnce() -> Result<Vec<ChunkRef>, E>,
) -> Result<Vec<ChunkRef>, E> {
    assert_eq!(trackers.len(), counts.len(), "one count per input");
    let Some(first) = trackers.first() else {
        return store();
    };
    // one gate for all: while it is held no checkpoint starts, so none waits on the rest
    let gate = first.begin(0);
    let stored = store();
    if let Ok(refs) = &stored {
        let mut st = first.inflight.lock();
        let mut at = 0;
        for (t, &n) in trackers.iter().zip(counts) {
            if let Some(input) = st.inputs.get_mut(&t.id) {
                input.batches.insert(0, refs[at..at + n].to_vec());
            }
            at += n;
        }
    }
    drop(gate);
    stored
}

/// A batch being stored; a checkpoint waits until it ends (or is dropped on failure).
pub struct Batch {
    tracker: Tracker,
    index: usize,
}

impl Batch {
    /// Records the batch's chunks, if it was stored.
    pub fn end<E>(self, stored: &Result<Vec<ChunkRef>, E>) {
        if let Ok(refs) = stored {
            let mut st = self.tracker.inflight.lock();
            if let Some(input) = st.inputs.get_mut(&self.tracker.id) {
                input.batches.insert(self.index, refs.clone());
            }
        }
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        let inflight = &self.tracker.inflight;
        inflight.lock().busy -= 1;
        inflight.cv.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(n: u8) -> ChunkRef {
        ChunkRef {
            id: [n; 32],
            size: u32::from(n) * 10,
            csize: 1,
        }
    }

    fn file(path: &str) -> Item {
        Item {
            path: path.as_bytes().to_vec(),
            mode: libc::S_IFREG | 0o644,
            ..Default::default()
        }
    }

    fn stored(t: &Tracker, index: usize, refs: &[ChunkRef]) {
        t.store(index, || Ok::<_, ()>(refs.to_vec())).unwrap();
    }

    #[test]
    fn parts_hold_the_chunks_since_the_last_part() {
        let inflight = Arc::new(Inflight::default());
        let a = inflight.register(file("a"));
        let b = inflight.register(file("b"));
        stored(&a, 1, &[chunk(3)]);
        stored(&a, 0, &[chunk(1), chunk(2)]);
        inflight.pause();
        let parts = inflight.part_items();
        inflight.resume();
        assert_eq!(parts.len(), 1, "b stored nothing yet");
        assert_eq!(parts[0].path, b"a.borg_part_1");
        assert_eq!(parts[0].part, Some(1));
        assert_eq!(parts[0].size, Some(60));
        assert_eq!(parts[0].chunks, Some(vec![chunk(1), chunk(2), chunk(3)]));

        stored(&a, 2, &[chunk(4)]);
        stored(&b, 0, &[chunk(5)]);
        inflight.pause();
        let parts = inflight.part_items();
        inflight.resume();
        let paths: Vec<&[u8]> = parts.iter().map(|p| p.path.as_slice()).collect();
        assert_eq!(paths, [&b"a.borg_part_2"[..], b"b.borg_part_1"]);
        assert_eq!(parts[0].chunks, Some(vec![chunk(4)]));

        stored(&a, 3, &[chunk(6)]);
        let (last, n) = inflight.finish(a.id());
        let last = last.expect("chunks after the last part");
        assert_eq!(last.path, b"a.borg_part_3");
        assert_eq!(last.chunks, Some(vec![chunk(6)]));
        assert_eq!(n, 3);
        assert_eq!(inflight.finish(b.id()), (None, 1));
    }

    #[test]
    fn an_input_never_parted_finishes_without_parts() {
        let inflight = Arc::new(Inflight::default());
        let a = inflight.register(file("a"));
        stored(&a, 0, &[chunk(1)]);
        assert_eq!(inflight.finish(a.id()), (None, 0));
        inflight.pause();
        assert!(inflight.part_items().is_empty());
        inflight.resume();
    }

    #[test]
    fn pause_waits_for_batches_being_stored() {
        let inflight = Arc::new(Inflight::default());
        let a = inflight.register(file("a"));
        let (started_tx, started) = crossbeam_channel::bounded(0);
        let (go_tx, go) = crossbeam_channel::bounded::<()>(0);
        let t = {
            let a = a.clone();
            std::thread::spawn(move || {
                a.store(0, || {
                    started_tx.send(()).unwrap();
                    go.recv().unwrap();
                    Ok::<_, ()>(vec![chunk(1)])
                })
            })
        };
        started.recv().unwrap();
        let pauser = {
            let inflight = inflight.clone();
            std::thread::spawn(move || {
                inflight.pause();
                let parts = inflight.part_items();
                inflight.resume();
                parts
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(
            !pauser.is_finished(),
            "pause returned while a batch was storing"
        );
        go_tx.send(()).unwrap();
        t.join().unwrap().unwrap();
        let parts = pauser.join().unwrap();
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].chunks, Some(vec![chunk(1)]));
    }

    #[test]
    fn inputs_stored_together_each_get_their_own_chunks() {
        let inflight = Arc::new(Inflight::default());
        let (a, b, c) = (
            inflight.register(file("a")),
            inflight.register(file("b")),
            inflight.register(file("c")),
        );
        let refs = vec![chunk(1), chunk(2), chunk(3)];
        let trackers = [a.clone(), b.clone(), c.clone()];
        let got = store_inputs(&trackers, &[2, 0, 1], || Ok::<_, ()>(refs.clone()));
        assert_eq!(got, Ok(refs));
        inflight.pause();
        let parts = inflight.part_items();
        inflight.resume();
        let paths: Vec<&[u8]> = parts.iter().map(|p| p.path.as_slice()).collect();
        assert_eq!(paths, [&b"a.borg_part_1"[..], b"c.borg_part_1"]);
        assert_eq!(parts[0].chunks, Some(vec![chunk(1), chunk(2)]));
        assert_eq!(parts[1].chunks, Some(vec![chunk(3)]));

        // a failed store records nothing and leaves no batch busy
        let d = inflight.register(file("d"));
        assert_eq!(
            store_inputs(&[d], &[1], || Err::<Vec<ChunkRef>, _>("full")),
            Err("full")
        );
        inflight.pause();
        assert!(inflight.part_items().is_empty());
        inflight.resume();
    }
}
