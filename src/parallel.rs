//! Work split over a few scoped threads.
//!
//! A layer cuts its batch into a fixed number of parts ([`PARTS`]) whatever the thread count,
//! and sums per-part results in part order: the threads only decide who computes which part,
//! so the same seed gives the same bits with 1, 2 or 16 threads.
//!
//! NOTE: plain `std::thread::scope`, no pool: a spawn costs 70-80 µs on the 2-core VMs we
//! measure on, so only work of a millisecond or more is split (see [`threads_for`]).

/// Parts a batch is cut into for per-part sums (the bound on useful threads per layer call).
pub const PARTS: usize = 8;

/// Multiply-adds below which a call stays on the calling thread.
const MIN_WORK_PER_THREAD: usize = 8_000_000;

/// The thread count worth using for `work` multiply-adds, at most `threads`.
pub fn threads_for(work: usize, threads: usize) -> usize {
    threads.clamp(1, (work / MIN_WORK_PER_THREAD).max(1))
}

/// Runs `f` on every item and returns the results in item order; the items are dealt to
/// `threads` threads in contiguous runs (the calling thread takes the first run).
pub fn map<I: Send, R: Send>(items: Vec<I>, threads: usize, f: impl Fn(I) -> R + Sync) -> Vec<R> {
    let threads = threads.clamp(1, items.len().max(1));
    if threads == 1 {
        return items.into_iter().map(f).collect();
    }
    let per_thread = items.len().div_ceil(threads);
    let mut groups: Vec<Vec<I>> = Vec::with_capacity(threads);
    let mut items = items.into_iter();
    loop {
        let group: Vec<I> = items.by_ref().take(per_thread).collect();
        if group.is_empty() {
            break;
        }
        groups.push(group);
    }
    let f = &f;
    std::thread::scope(|s| {
        let mut groups = groups.into_iter();
        let first = groups.next().unwrap_or_default();
        let handles: Vec<_> = groups
            .map(|g| s.spawn(move || g.into_iter().map(f).collect::<Vec<R>>()))
            .collect();
        let mut out: Vec<R> = first.into_iter().map(f).collect();
        for h in handles {
            out.extend(h.join().expect("worker thread panicked"));
        }
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_back_in_item_order_for_any_thread_count() {
        for threads in [1, 2, 3, 8, 20] {
            for n in [0, 1, 5, 8, 13] {
                let items: Vec<usize> = (0..n).collect();
                let out = map(items, threads, |i| i * i);
                assert_eq!(out, (0..n).map(|i| i * i).collect::<Vec<_>>());
            }
        }
    }

    #[test]
    fn small_work_stays_on_one_thread() {
        assert_eq!(threads_for(1000, 8), 1);
        assert_eq!(threads_for(100_000_000, 2), 2);
        assert_eq!(threads_for(10_000_000, 2), 1);
        assert_eq!(threads_for(100_000_000, 0), 1);
    }
}
