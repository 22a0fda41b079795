//! The threads calls run on: one single-threaded runtime per core, shared
//! by every voice channel of the process. A call's task owns its audio
//! pipeline, whose stages are not `Send`, so it is built and run as a local
//! task of one of these runtimes (the one with the fewest calls) and never
//! moves. A thread per call would cost each call its own runtime, its own
//! allocator heap (megabytes with mimalloc) and a context switch per wakeup.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use tokio::sync::mpsc;

/// A call's task, built on the thread that runs it.
pub(crate) type CallJob = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()>>> + Send>;

struct Worker {
    jobs: mpsc::UnboundedSender<CallJob>,
    calls: Arc<AtomicUsize>,
}

struct Pool {
    workers: Vec<Worker>,
}

static POOL: OnceLock<Result<Pool, String>> = OnceLock::new();

fn start() -> Result<Pool, String> {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut workers = Vec::with_capacity(n);
    for i in 0..n {
        let (tx, mut rx) = mpsc::unbounded_channel::<CallJob>();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start a call runtime: {e}"))?;
        std::thread::Builder::new()
            .name(format!("roomkit-calls-{i}"))
            .spawn(move || {
                let local = tokio::task::LocalSet::new();
                local.block_on(&runtime, async move {
                    while let Some(job) = rx.recv().await {
                        tokio::task::spawn_local(job());
                    }
                });
                // No new calls can come: let the running ones end.
                runtime.block_on(local);
            })
            .map_err(|e| format!("cannot start a call thread: {e}"))?;
        workers.push(Worker {
            jobs: tx,
            calls: Arc::new(AtomicUsize::new(0)),
        });
    }
    Ok(Pool { workers })
}

/// Runs `job` on the call thread with the fewest calls.
///
/// # Errors
/// When the call threads cannot be started.
pub(crate) fn submit(job: CallJob) -> Result<(), String> {
    let pool = POOL.get_or_init(start).as_ref().map_err(Clone::clone)?;
    let worker = pool
        .workers
        .iter()
        .min_by_key(|w| w.calls.load(Ordering::Relaxed))
        .ok_or_else(|| "no call thread".to_owned())?;
    let calls = worker.calls.clone();
    calls.fetch_add(1, Ordering::Relaxed);
    let counted: CallJob = Box::new(move || {
        let call = job();
        Box::pin(async move {
            call.await;
            calls.fetch_sub(1, Ordering::Relaxed);
        })
    });
    worker
        .jobs
        .send(counted)
        .map_err(|_| "the call thread has stopped".to_owned())
}
