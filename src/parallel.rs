//! Work split over a few threads that stay.
//!
//! A layer cuts its batch into a fixed number of parts ([`PARTS`]) whatever the thread count,
//! and sums per-part results in part order: the threads only decide who computes which part,
//! so the same seed gives the same bits with 1, 2 or 16 threads.
//!
//! The helper threads are started once and kept (a spawn cost 70-80 µs on the 2-core VMs we
//! measure on, more than a W1 training step's whole first-layer product). A call posts its
//! items; the calling thread and the helpers claim them one at a time from a shared counter,
//! so an item no helper has taken yet (a helper asleep, or busy elsewhere) is run by the
//! caller itself: a call never waits for a helper to wake, only for the items helpers have
//! already started. After an item a helper looks for the next call for `SPIN` (yielding its
//! core meanwhile), then sleeps.
//! One call at a time uses the helpers; a call made while they serve another (a nested call,
//! or tests on several threads) runs its items on its own thread.

use std::any::Any;
use std::cell::UnsafeCell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

/// Parts a batch is cut into for per-part sums (the bound on useful threads per layer call).
pub const PARTS: usize = 8;

/// Multiply-adds below which a call stays on the calling thread.
/// NOTE: handing items to a helper that is awake costs a microsecond or two; one that sleeps
/// costs its wake-up (tens of µs, on the helper's side: the caller runs the items meanwhile).
const MIN_WORK_PER_THREAD: usize = 500_000;

/// How long a helper looks for the next call before it sleeps.
/// NOTE: `backprop bench`, 6 alternating rounds, medians: W1 at 15 / 30 / 60 / 120 µs 1.79 /
/// 1.60 / 1.61 / 1.52 s, at 300 µs worse again; W2 (4 rounds) 30 µs 0.79 s, 120 µs 0.66 s;
/// W3 the same within noise. Parking at once cost W1 0.3-0.7 s, spinning in place (no yield)
/// 0.5-0.9 s.
const SPIN: Duration = Duration::from_micros(120);

/// How long a caller spins in place for its helpers' last items before it yields its core.
const WAIT_IN_PLACE: Duration = Duration::from_micros(10);

/// Multiply-adds below which a call stays on the calling thread while the cores have other
/// work queued ([`OtherWork`]): a split then takes a core from that work, and pays
/// only when large.
/// NOTE: W1 (`backprop bench`, 6 alternating rounds, medians) with its evaluations counted
/// by the batch loader between batches: its products split (1.5M multiply-adds, counted
/// double for a sparse one) 1.12 s, kept on one thread 1.06 s. W2's products that split
/// (8.4M and more) still do.
const MIN_WORK_PER_THREAD_BESIDE_OTHER_WORK: usize = 4_000_000;

/// How many [`OtherWork`] are held: threads with work of their own queued for the cores.
static OTHER_WORK: AtomicUsize = AtomicUsize::new(0);

/// Held while a thread has work of its own queued that a split would delay (training holds
/// one while its batch loader counts an evaluation between batches): splits then need
/// `MIN_WORK_PER_THREAD_BESIDE_OTHER_WORK`.
pub struct OtherWork(());

impl OtherWork {
    pub fn begin() -> OtherWork {
        OTHER_WORK.fetch_add(1, Ordering::Relaxed);
        OtherWork(())
    }
}

impl Drop for OtherWork {
    fn drop(&mut self) {
        OTHER_WORK.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The thread count worth using for `work` multiply-adds, at most `threads`.
pub fn threads_for(work: usize, threads: usize) -> usize {
    let min = if OTHER_WORK.load(Ordering::Relaxed) > 0 {
        MIN_WORK_PER_THREAD_BESIDE_OTHER_WORK
    } else {
        MIN_WORK_PER_THREAD
    };
    threads.clamp(1, (work / min).max(1))
}

/// Runs `f` on every item and returns the results in item order, on up to `threads` threads
/// (the calling thread and `threads - 1` helpers).
pub fn map<I: Send, R: Send>(items: Vec<I>, threads: usize, f: impl Fn(I) -> R + Sync) -> Vec<R> {
    let threads = threads.clamp(1, items.len().max(1));
    if threads == 1 {
        return items.into_iter().map(f).collect();
    }
    let inputs: Vec<Once<I>> = items.into_iter().map(Once::new).collect();
    let outputs: Vec<Once<R>> = inputs.iter().map(|_| Once::empty()).collect();
    run(inputs.len(), threads, &|i| {
        // SAFETY: `run` hands each index to exactly one call of this closure
        let item = unsafe { inputs[i].take() };
        unsafe { outputs[i].put(f(item)) };
    });
    outputs.into_iter().map(Once::into_inner).collect()
}

/// Runs `a` and `b`, side by side when `threads` ≥ 2 (`a` on the calling thread unless a
/// helper is slow to come, `b` on a helper unless the caller gets to it first).
pub fn join<A: Send, B: Send>(
    threads: usize,
    a: impl FnOnce() -> A + Send,
    b: impl FnOnce() -> B + Send,
) -> (A, B) {
    if threads < 2 {
        return (a(), b());
    }
    let (fa, fb) = (Once::new(a), Once::new(b));
    let (ra, rb) = (Once::empty(), Once::empty());
    run(2, 2, &|i| {
        // SAFETY: `run` hands each index to exactly one call of this closure
        if i == 0 {
            unsafe { ra.put(fa.take()()) }
        } else {
            unsafe { rb.put(fb.take()()) }
        }
    });
    (ra.into_inner(), rb.into_inner())
}

/// A value taken or given exactly once, by whichever thread claimed its index.
struct Once<T>(UnsafeCell<Option<T>>);

// SAFETY: each `Once` is touched by one thread at a time: the one that claimed its index
// (claims are unique: `Task::work` takes them from one atomic counter), then the caller after
// every claimed item is done (a helper's exit is a release on `Pool::inside`, which the
// caller reads with acquire).
unsafe impl<T: Send> Sync for Once<T> {}

impl<T> Once<T> {
    fn new(v: T) -> Self {
        Once(UnsafeCell::new(Some(v)))
    }
    fn empty() -> Self {
        Once(UnsafeCell::new(None))
    }
    /// SAFETY: no other thread touches this value now.
    unsafe fn take(&self) -> T {
        unsafe { (*self.0.get()).take() }.expect("an item is taken once")
    }
    /// SAFETY: no other thread touches this value now.
    unsafe fn put(&self, v: T) {
        unsafe { *self.0.get() = Some(v) }
    }
    fn into_inner(self) -> T {
        self.0.into_inner().expect("every item was run")
    }
}

/// One call's items, shared by its caller and the helpers that join it.
struct Task<'a> {
    items: usize,
    next: AtomicUsize, // the first item not claimed yet
    body: &'a (dyn Fn(usize) + Sync),
    panic: Mutex<Option<Box<dyn Any + Send>>>, // the first panic of an item, for the caller
    caller: Thread,
}

impl Task<'_> {
    /// Claims and runs items until none is left; a panic is kept for the caller to raise.
    fn work(&self) {
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            if i >= self.items {
                return;
            }
            if let Err(p) = panic::catch_unwind(AssertUnwindSafe(|| (self.body)(i))) {
                lock(&self.panic).get_or_insert(p);
                self.next.store(self.items, Ordering::Relaxed); // the others stop too
            }
        }
    }
}

/// The helper threads and the call they serve.
struct Pool {
    state: Mutex<State>,
    posted: AtomicUsize, // `State::generation`, read without the lock by spinning helpers
    inside: AtomicUsize, // helpers running items of the posted call
}

struct State {
    generation: usize,
    task: Option<TaskPtr>,
    seats: usize, // helpers the posted call still takes
    helpers: Vec<Thread>,
}

/// The posted call's task, its lifetime erased: its caller does not return before every
/// helper that joined it has left (`run`).
#[derive(Clone, Copy)]
struct TaskPtr(*const Task<'static>);

// SAFETY: a `Task` is Sync; the pointer is only followed while the task lives (see TaskPtr).
unsafe impl Send for TaskPtr {}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| Pool {
        state: Mutex::new(State {
            generation: 0,
            task: None,
            seats: 0,
            helpers: Vec::new(),
        }),
        posted: AtomicUsize::new(0),
        inside: AtomicUsize::new(0),
    })
}

/// `body(i)` for every `i < items`, on the calling thread and up to `threads - 1` helpers;
/// returns when all are done, raising the first panic of an item.
fn run(items: usize, threads: usize, body: &(dyn Fn(usize) + Sync)) {
    let pool = pool();
    let task = Task {
        items,
        next: AtomicUsize::new(0),
        body,
        panic: Mutex::new(None),
        caller: thread::current(),
    };
    {
        let mut s = lock(&pool.state);
        if s.task.is_some() {
            // the helpers serve another call (this one may be nested in it): run here
            drop(s);
            return (0..items).for_each(body);
        }
        while s.helpers.len() < threads - 1 {
            let index = s.helpers.len();
            let spawned = thread::Builder::new()
                .name(format!("backprop-helper-{index}"))
                .spawn(move || helper(pool));
            match spawned {
                Ok(handle) => s.helpers.push(handle.thread().clone()),
                Err(_) => break, // no thread to be had: fewer helpers
            }
        }
        s.generation += 1;
        s.task = Some(TaskPtr((&raw const task).cast()));
        s.seats = threads - 1;
        pool.posted.store(s.generation, Ordering::Release);
        s.helpers.iter().take(threads - 1).for_each(Thread::unpark);
    }
    task.work();
    // no helper joins from now on; wait for those that did. NOTE: the call keeps the helpers
    // (`task` stays set) until then: `inside` counts the helpers of one call only
    lock(&pool.state).seats = 0;
    let start = Instant::now();
    while pool.inside.load(Ordering::Acquire) > 0 {
        let waited = start.elapsed();
        if waited < WAIT_IN_PLACE {
            std::hint::spin_loop();
        } else if waited < SPIN {
            thread::yield_now(); // the helper may share this core (three threads on two)
        } else {
            thread::park(); // a leaving helper unparks us
        }
    }
    lock(&pool.state).task = None;
    if let Some(p) = lock(&task.panic).take() {
        panic::resume_unwind(p);
    }
}

/// A helper's life: wait for a call (spinning, then asleep), join it if it has a seat, run
/// items until none is left, leave.
fn helper(pool: &'static Pool) {
    let mut seen = 0;
    loop {
        let start = Instant::now();
        while pool.posted.load(Ordering::Acquire) == seen {
            if start.elapsed() < SPIN {
                // NOTE: yield rather than spin in place: on two cores the batch loader (W1,
                // W2) shares this helper's core
                thread::yield_now();
            } else {
                thread::park(); // the next call unparks us
            }
        }
        let task = {
            let mut s = lock(&pool.state);
            seen = s.generation;
            match s.task {
                Some(task) if s.seats > 0 => {
                    s.seats -= 1;
                    pool.inside.fetch_add(1, Ordering::Relaxed);
                    task
                }
                _ => continue, // closed already, or no seat left
            }
        };
        // SAFETY: the caller waits for `inside` to fall back to 0 before the task goes
        let task = unsafe { &*task.0 };
        task.work();
        let caller = task.caller.clone(); // before leaving: the task may go right after
        pool.inside.fetch_sub(1, Ordering::Release);
        caller.unpark();
    }
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
        assert_eq!(threads_for(MIN_WORK_PER_THREAD - 1, 2), 1);
        assert_eq!(threads_for(100_000_000, 0), 1);
    }

    #[test]
    fn a_panicking_item_reaches_the_caller_and_the_helpers_go_on() {
        let caught = std::panic::catch_unwind(|| {
            map((0..64).collect(), 2, |i: usize| {
                assert_ne!(i, 40, "item 40 fails");
                i
            })
        });
        let message = caught.expect_err("the panic comes back");
        assert_eq!(
            message.downcast_ref::<String>().unwrap(),
            "assertion `left != right` failed: item 40 fails\n  left: 40\n right: 40"
        );
        assert_eq!(
            map((0..64).collect(), 2, |i| i + 1),
            (1..65).collect::<Vec<_>>()
        );
    }

    #[test]
    fn nested_and_concurrent_calls_all_finish_with_their_own_results() {
        std::thread::scope(|s| {
            let callers: Vec<_> = (0..4)
                .map(|t| {
                    s.spawn(move || {
                        for round in 0..50 {
                            let out = map((0..16).collect(), 3, |i: usize| {
                                let inner = map((0..8).collect(), 2, |j: usize| i * j + t + round);
                                inner.iter().sum::<usize>()
                            });
                            let want: Vec<usize> = (0..16)
                                .map(|i| (0..8).map(|j| i * j + t + round).sum())
                                .collect();
                            assert_eq!(out, want);
                        }
                    })
                })
                .collect();
            callers.into_iter().for_each(|c| c.join().unwrap());
        });
    }

    #[test]
    fn many_callers_in_quick_succession_never_wait_on_each_other() {
        // a caller must not take the helpers of the next call for its own (it once waited
        // forever on a count that belonged to the call after it)
        std::thread::scope(|s| {
            for t in 0..4 {
                s.spawn(move || {
                    for round in 0..3000 {
                        let out = map(vec![t, round], 2, |v: usize| v * 2);
                        assert_eq!(out, vec![2 * t, 2 * round]);
                    }
                });
            }
        });
    }

    #[test]
    fn join_runs_both_sides_and_returns_both_results() {
        let (mut left, mut right) = (vec![0; 1000], vec![0; 1000]);
        for threads in [1, 2, 4] {
            let (a, b) = join(
                threads,
                || {
                    left.iter_mut().enumerate().for_each(|(i, v)| *v = i);
                    "a"
                },
                || {
                    right.iter_mut().for_each(|v| *v = 7);
                    2.5
                },
            );
            assert_eq!((a, b), ("a", 2.5));
            assert_eq!(left[999] + right[0], 1006);
        }
    }
}
