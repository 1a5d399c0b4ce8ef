//! One stream's cut points found on several cores at once, by speculation.
//!
//! Where a chunk ends depends only on where it starts, so a thread may chunk part of the
//! stream from a guessed start as if a chunk began there. Its cuts are wrong until one of
//! them coincides with a true cut; from then on they are the true ones. The thread before
//! it, which chunks from a true start, hands over where it lands on one of the guessing
//! thread's cuts: both stop at the first hash hit after their minimum size, so the chunk
//! that crosses the guess usually ends at the guessing thread's first cut, and the thread
//! before searches it only up to where the guessing thread began to search (see
//! [`handover`]). Each thread skips the minimum size of its chunks just as borg's
//! sequential loop does, so no stretch is searched twice unless chunks fall into step late.

use std::sync::Mutex;

use rayon::prelude::*;

use super::{Cutter, End};

/// The chunk ends after a true chunk start that the data decides, as one sequential pass
/// would find them.
pub(super) struct Cuts {
    /// Chunk ends in increasing order, `start` excluded.
    pub ends: Vec<usize>,
    /// For the chunk after the last end, when the data did not decide it: no window in
    /// `[its start + min, scanned)` is a cut.
    pub scanned: Option<usize>,
}

/// What one part's thread found.
#[derive(Default)]
struct Part {
    /// Its (guessed or true) start, then the ends it found.
    ends: Vec<usize>,
    /// Whether it has stopped.
    done: bool,
    /// Set when it stopped on an end that part `j` found too.
    joined: Option<usize>,
    /// Set when it stopped because the data ran out (see [`Cuts::scanned`]).
    scanned: Option<usize>,
}

/// Whether part `k`'s end `end` is a cut that a later part found as well.
enum Match {
    In(usize),
    Never,
    NotYet,
}

/// The [`Cuts`] of `data[start..]` (all of the input when `eof`), searched by `parts`
/// threads of rayon's pool; `skip` as for [`Cutter::end_of`]. The parts are of equal work:
/// each searches from where the one before stops (its start plus the minimum size, see
/// [`handover`]) to where it begins to search itself.
pub(super) fn cuts(
    cutter: &Cutter,
    data: &[u8],
    start: usize,
    skip: usize,
    eof: bool,
    parts: usize,
) -> Cuts {
    let parts = parts.max(1);
    // The first part searches from `from`, part `k` from `starts[k] + min`.
    let from = skip.max(start + cutter.min).min(data.len());
    let share = (data.len() - from) / parts;
    let starts: Vec<usize> = std::iter::once(start)
        .chain((1..parts).map(|k| (from + k * share).saturating_sub(cutter.min).max(start + k)))
        .collect();
    let shared: Vec<Mutex<Part>> = starts
        .iter()
        .map(|&s| {
            Mutex::new(Part {
                ends: vec![s],
                ..Part::default()
            })
        })
        .collect();
    (0..parts)
        .into_par_iter()
        .for_each(|k| run(cutter, data, eof, &starts, &shared, k, skip));
    merge(
        shared
            .into_iter()
            .map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner()))
            .collect(),
    )
}

/// Chunks part `k` from its start until it lands on a later part's cut or the data runs out;
/// `skip` applies to the first part's first chunk.
fn run(
    cutter: &Cutter,
    data: &[u8],
    eof: bool,
    starts: &[usize],
    shared: &[Mutex<Part>],
    k: usize,
    skip: usize,
) {
    let lock = |j: usize| shared[j].lock().unwrap_or_else(|e| e.into_inner());
    let mut at = starts[k];
    let mut skip = if k == 0 { skip } else { 0 };
    // Ends of this part at or past the next part's start, not yet matched or ruled out.
    let mut pending = std::collections::VecDeque::new();
    let stop = loop {
        let found = match starts.get(k + 1) {
            Some(&next) if at <= next => handover(cutter, data, eof, shared, k, at, next, skip),
            _ => cutter.end_of(data, at, skip, eof),
        };
        match found {
            End::Open { scanned } => break (None, Some(scanned)),
            End::At(end) => {
                skip = 0;
                lock(k).ends.push(end);
                at = end;
                if starts.get(k + 1).is_some_and(|&next| end >= next) {
                    pending.push_back(end);
                }
                let mut joined = None;
                while let Some(&e) = pending.front() {
                    match find(starts, shared, k, e) {
                        Match::In(j) => {
                            joined = Some((e, j));
                            break;
                        }
                        Match::Never => {
                            pending.pop_front();
                        }
                        Match::NotYet => break,
                    }
                }
                if let Some((e, j)) = joined {
                    break (Some((e, j)), None);
                }
                if end == data.len() {
                    break (None, None);
                }
            }
        }
    };
    let mut p = lock(k);
    p.done = true;
    match stop {
        (Some((e, j)), _) => {
            // Ends found while waiting for the match are past the hand-over: drop them.
            let keep = p.ends.partition_point(|&x| x <= e);
            p.ends.truncate(keep);
            p.joined = Some(j);
        }
        (None, scanned) => p.scanned = scanned,
    }
}

/// The end of part `k`'s chunk from `at`, a true start at or before the next part's start
/// `next`. The next part skips its first chunk's minimum and then searches for the first
/// hash hit; if no window of this chunk before that point is a hit, this chunk ends at the
/// same hit, which the next part has usually found by now. So this part searches only up
/// to where the next one began searching: the stretch both would have searched (about a
/// chunk per hand-over) is searched once.
#[allow(clippy::too_many_arguments)]
fn handover(
    cutter: &Cutter,
    data: &[u8],
    eof: bool,
    shared: &[Mutex<Part>],
    k: usize,
    at: usize,
    next: usize,
    skip: usize,
) -> End {
    let w = cutter.window;
    // Windows starting before `next + min` are looked at, no further.
    let upto = next + cutter.min + w;
    if upto >= data.len() {
        return cutter.end_of(data, at, skip, eof);
    }
    let scanned = match cutter.end_of(&data[..upto], at, skip, false) {
        End::At(e) => return End::At(e),
        End::Open { scanned } => scanned,
    };
    let first = shared[k + 1]
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .ends
        .get(1)
        .copied();
    // The next part's first end must be a hit this chunk's own search would reach, before
    // its maximum size; a cut at the next part's maximum size or at the end of the input
    // lies beyond that.
    let reached = |e: usize| e + w < (at + cutter.max).min(data.len());
    match first {
        Some(e) if scanned >= next + cutter.min && reached(e) => End::At(e),
        _ => cutter.end_of(data, at, scanned, eof),
    }
}

/// Looks for part `k`'s end `end` among the ends of the later parts that may hold it.
fn find(starts: &[usize], shared: &[Mutex<Part>], k: usize, end: usize) -> Match {
    let mut not_yet = false;
    for j in k + 1..starts.len() {
        if starts[j] > end {
            break;
        }
        let p = shared[j].lock().unwrap_or_else(|e| e.into_inner());
        if p.ends.binary_search(&end).is_ok() {
            return Match::In(j);
        }
        // A part that has gone past `end` (or stopped) will not find it any more.
        let passed = p.done || p.ends.last().is_some_and(|&x| x > end);
        not_yet |= !passed;
    }
    match not_yet {
        true => Match::NotYet,
        false => Match::Never,
    }
}

/// Follows the hand-overs from the first part, which starts at a true chunk start.
fn merge(parts: Vec<Part>) -> Cuts {
    let mut ends = Vec::new();
    let mut last = parts[0].ends[0];
    let mut k = 0;
    loop {
        let p = &parts[k];
        ends.extend(p.ends.iter().copied().filter(|&e| e > last));
        last = ends.last().copied().unwrap_or(last);
        match p.joined {
            Some(j) => k = j,
            None => {
                return Cuts {
                    ends,
                    scanned: p.scanned,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testdata::mixed;
    use super::super::{chunk_sizes, ChunkerParams};
    use super::*;

    fn true_ends(p: &ChunkerParams, seed: u32, data: &[u8]) -> Vec<usize> {
        chunk_sizes(p, seed, data)
            .iter()
            .scan(0, |at, &s| {
                *at += s;
                Some(*at)
            })
            .collect()
    }

    #[test]
    fn equal_sequential_cuts_at_the_end_of_input() {
        let p = ChunkerParams::Buzhash {
            min_exp: 10,
            max_exp: 16,
            mask_bits: 12,
            window: 255,
        };
        let c = Cutter::new(&p, 77).unwrap();
        let d = mixed(5, 3 << 20, 90_000);
        let want = true_ends(&p, 77, &d);
        for parts in [1, 2, 3, 7, 64] {
            let got = cuts(&c, &d, 0, 0, true, parts);
            assert_eq!(got.ends, want, "parts={parts}");
            assert_eq!(got.scanned, None);
        }
    }

    #[test]
    fn equal_sequential_cuts_where_chunks_reach_their_maximum() {
        // Hits are rarer than the maximum size allows, and the minimum is a large share of
        // it: hand-overs meet chunks cut at the maximum on both sides of a part's start.
        for (min_exp, max_exp, mask_bits) in [(10, 12, 12), (11, 12, 12), (8, 12, 12), (7, 9, 9)] {
            let p = ChunkerParams::Buzhash {
                min_exp,
                max_exp,
                mask_bits,
                window: 63,
            };
            let c = Cutter::new(&p, 11).unwrap();
            for len in [300_000, 1 << 20] {
                let d = mixed(u64::from(mask_bits), len, 7_000);
                let want = true_ends(&p, 11, &d);
                for parts in [2, 3, 5, 16, 64] {
                    let got = cuts(&c, &d, 0, 0, true, parts);
                    assert_eq!(
                        got.ends, want,
                        "{min_exp},{max_exp},{mask_bits} len={len} parts={parts}"
                    );
                }
            }
        }
    }

    #[test]
    fn stop_where_the_data_stops_deciding() {
        let p = ChunkerParams::Buzhash {
            min_exp: 8,
            max_exp: 14,
            mask_bits: 10,
            window: 63,
        };
        let c = Cutter::new(&p, 3).unwrap();
        let d = mixed(9, 1 << 20, 40_000);
        let whole = true_ends(&p, 3, &d);
        for (start, cut) in [(0, 600_000), (whole[10], 700_001), (whole[3], whole[3] + 5)] {
            let prefix = &d[..cut];
            // What one sequential pass over the prefix decides, and where it leaves off.
            let (mut want, mut at) = (Vec::new(), start);
            let scanned = loop {
                match c.end_of(prefix, at, 0, false) {
                    End::At(e) => {
                        want.push(e);
                        at = e;
                    }
                    End::Open { scanned } => break scanned,
                }
            };
            for parts in [1, 2, 4] {
                let got = cuts(&c, prefix, start, 0, false, parts);
                assert_eq!(got.ends, want, "{start}..{cut} parts={parts}");
                assert_eq!(got.scanned, Some(scanned), "{start}..{cut} parts={parts}");
                // Resuming the open chunk with what was scanned gives the true ends.
                let rest = cuts(&c, &d, at, scanned, true, parts);
                let tail: Vec<usize> = whole.iter().copied().filter(|&e| e > at).collect();
                assert_eq!(rest.ends, tail, "resumed at {at} parts={parts}");
            }
        }
    }
}
