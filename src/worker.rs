//! Which server worker a thread is, and values kept once per worker.
//!
//! The proxy serves connections on one single-threaded runtime per core
//! (`server::Workers`). Whatever every request writes to, be it a counter,
//! a lock word or a reference count, is a cache line that the cores would
//! otherwise pass back and forth on every request; profiles under load
//! showed those shared writes among the hottest instructions of the request
//! path. This module owns the worker index of the current thread and
//! [`PerWorker`], a value kept once per worker on cache lines of its own, so
//! that a request writes only to memory its own core owns. Threads that are
//! not workers (the main runtime with the health listener, tests) share one
//! extra slot. It also owns what a worker does when one of its tasks panics
//! ([`set_current`]'s `on_panic`).

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

thread_local! {
    /// 0 on threads that are not workers; worker `i` is `i + 1`.
    static SLOT: Cell<usize> = const { Cell::new(0) };
    /// What a panic on this (worker) thread reports to.
    static ON_PANIC: std::cell::RefCell<Option<OnPanic>> = const { std::cell::RefCell::new(None) };
}

/// Told, on the panicking thread, what panicked where.
pub(crate) type OnPanic = Box<dyn Fn(String)>;

/// Marks the current thread as server worker `index` (counted from 0);
/// a panic in any task it runs is reported to `on_panic`.
///
/// tokio catches a task's panic and drops the task: the worker goes on,
/// and a bug that panics on every connection would leave a process that
/// resets each of them while its health checks pass. The process-wide
/// panic hook (installed once, after the default one, which still prints
/// the message) hands every panic on a worker thread to its `on_panic`.
pub(crate) fn set_current(index: usize, on_panic: OnPanic) {
    SLOT.with(|slot| slot.set(index + 1));
    ON_PANIC.with(|cell| *cell.borrow_mut() = Some(on_panic));
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            previous(info);
            let _ = ON_PANIC.try_with(|cell| {
                if let Ok(cell) = cell.try_borrow() {
                    if let Some(report) = cell.as_ref() {
                        report(describe(info));
                    }
                }
            });
        }));
    });
}

/// "a worker task panicked at FILE:LINE: MESSAGE".
fn describe(info: &std::panic::PanicHookInfo<'_>) -> String {
    let payload = info.payload();
    let message = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)");
    match info.location() {
        Some(at) => format!(
            "a worker task panicked at {}:{}: {message}",
            at.file(),
            at.line()
        ),
        None => format!("a worker task panicked: {message}"),
    }
}

/// How many workers serve connections: one per core this process may use
/// (cgroup limits included), at least one. Asked once, so that the workers
/// and every [`PerWorker`] agree (and the cgroup files are read once).
pub(crate) fn count() -> usize {
    static COUNT: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *COUNT.get_or_init(|| std::thread::available_parallelism().map_or(1, usize::from))
}

/// Two cache lines: adjacent-line prefetchers fetch lines in pairs.
#[repr(align(128))]
#[derive(Debug, Default)]
struct Padded<T>(T);

/// One `T` per worker plus one for every other thread, each on cache lines
/// of its own.
#[derive(Debug)]
pub(crate) struct PerWorker<T> {
    slots: Box<[Padded<T>]>,
}

impl<T> PerWorker<T> {
    /// A value for each of [`count`] workers and for other threads, each
    /// made by `make`.
    pub(crate) fn new(make: impl FnMut() -> T) -> Self {
        Self::with_workers(count(), make)
    }

    /// As [`PerWorker::new`], for `workers` workers.
    pub(crate) fn with_workers(workers: usize, mut make: impl FnMut() -> T) -> Self {
        Self {
            slots: (0..=workers).map(|_| Padded(make())).collect(),
        }
    }

    /// This thread's value. (A worker index beyond the count, which only a
    /// test that builds its own workers could produce, wraps around.)
    pub(crate) fn local(&self) -> &T {
        let slot = SLOT.with(Cell::get) % self.slots.len();
        &self.slots[slot].0
    }

    /// Every value, for changes that reach every worker.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.slots.iter().map(|padded| &padded.0)
    }

    /// The total of one counter over every worker.
    pub(crate) fn sum(&self, counter: impl Fn(&T) -> &AtomicU64) -> u64 {
        self.iter()
            .map(|value| counter(value).load(Ordering::Relaxed))
            .sum()
    }
}

/// A copy of `value` in memory of its own, for a [`PerWorker`] slot: a
/// clone shares its original's reference count, a copy does not.
pub(crate) fn own_copy(value: &http::HeaderValue) -> http::HeaderValue {
    let mut copy =
        http::HeaderValue::from_maybe_shared(bytes::Bytes::copy_from_slice(value.as_bytes()))
            .unwrap_or_else(|_| value.clone());
    copy.set_sensitive(value.is_sensitive());
    copy
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// A panic on a worker thread (in a task tokio would catch) reaches
    /// that worker's `on_panic` with its message and place; one on another
    /// thread does not.
    #[test]
    fn a_worker_panic_is_reported() {
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let worker = std::thread::spawn(move || {
            set_current(0, Box::new(move |why| tx.send(why).unwrap()));
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            let task = runtime.spawn(async { panic!("boom {}", 42) });
            assert!(runtime.block_on(task).unwrap_err().is_panic());
            // The worker goes on: only its `on_panic` knows.
            runtime.block_on(async { 1 + 1 })
        });
        assert_eq!(worker.join().unwrap(), 2);
        let why = rx.recv().unwrap();
        assert!(
            why.starts_with("a worker task panicked at src/worker.rs:"),
            "{why}"
        );
        assert!(why.ends_with(": boom 42"), "{why}");
        assert!(rx.try_recv().is_err());
        // Not a worker: nothing reported (and nothing to report to).
        assert!(std::thread::spawn(|| panic!("elsewhere")).join().is_err());
    }

    #[test]
    fn each_worker_thread_has_its_own_value() {
        let counts = std::sync::Arc::new(PerWorker::with_workers(2, || AtomicUsize::new(0)));
        let threads: Vec<_> = (0..2)
            .map(|index| {
                let counts = counts.clone();
                std::thread::spawn(move || {
                    set_current(index, Box::new(|_| {}));
                    for _ in 0..=index {
                        counts.local().fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        counts.local().fetch_add(10, Ordering::Relaxed);
        let values: Vec<usize> = counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        assert_eq!(values, [10, 1, 2]);
    }

    #[test]
    fn own_copy_is_equal_but_not_shared() {
        let mut original = http::HeaderValue::from_str("Basic YWxpY2U6cHc=").unwrap();
        original.set_sensitive(true);
        let copy = own_copy(&original);
        assert_eq!(copy, original);
        assert!(copy.is_sensitive());
        assert_ne!(copy.as_bytes().as_ptr(), original.as_bytes().as_ptr());
    }

    #[test]
    fn values_do_not_share_cache_lines() {
        let values = PerWorker::with_workers(3, || 0u8);
        let addresses: Vec<usize> = values
            .iter()
            .map(|v| std::ptr::from_ref(v) as usize)
            .collect();
        for pair in addresses.windows(2) {
            assert!(pair[1] - pair[0] >= 128, "{addresses:?}");
        }
    }
}
