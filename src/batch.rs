//! Opportunistic batching of calls to one destination.
//!
//! A caller that finds a call slot free sends its request at once, alone, from its own task, so an
//! idle system pays no queueing and no extra task hop. While every slot is busy, requests wait in a
//! queue; the call that frees a slot hands the whole queue to a new task as one batch. Batches
//! therefore grow with the load and never wait for a timer, and the destination handles one call
//! where it would have handled dozens.

use std::sync::{Arc, Mutex, MutexGuard};

use futures::future::BoxFuture;
use tokio::sync::oneshot;

/// Sends a batch and answers every item, in order.
pub type SendBatch<T, R> = Box<dyn Fn(Vec<T>) -> BoxFuture<'static, Vec<R>> + Send + Sync>;

pub struct Batcher<T, R> {
    inner: Arc<Inner<T, R>>,
}

struct Inner<T, R> {
    queue: Mutex<Queue<T, R>>,
    send: SendBatch<T, R>,
    max_calls: usize,
    max_batch: usize,
}

struct Queue<T, R> {
    calls: usize,
    waiting: Vec<(T, oneshot::Sender<R>)>,
}

impl<T: Send + 'static, R: Send + 'static> Batcher<T, R> {
    /// At most `max_calls` calls run at once, each with at most `max_batch` items.
    pub fn new(max_calls: usize, max_batch: usize, send: SendBatch<T, R>) -> Self {
        let queue = Mutex::new(Queue { calls: 0, waiting: Vec::new() });
        Batcher { inner: Arc::new(Inner { queue, send, max_calls: max_calls.max(1), max_batch: max_batch.max(1) }) }
    }

    /// Sends `item` (alone or in a batch) and returns its answer; `None` if the batch's sender
    /// answered fewer items than it was given.
    pub async fn call(&self, item: T) -> Option<R> {
        let slot_or_queued = {
            let mut queue = self.inner.lock();
            if queue.calls < self.inner.max_calls {
                queue.calls += 1;
                Ok(item)
            } else {
                let (answer, answered) = oneshot::channel();
                queue.waiting.push((item, answer));
                Err(answered)
            }
        };
        match slot_or_queued {
            Ok(item) => {
                // The slot is handed on even if this caller gives up while its call runs.
                let _slot = Slot(self.inner.clone());
                (self.inner.send)(vec![item]).await.into_iter().next()
            }
            Err(answered) => answered.await.ok(),
        }
    }
}

impl<T, R> Inner<T, R> {
    fn lock(&self) -> MutexGuard<'_, Queue<T, R>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next batch for a slot that just came free, or `None` after giving the slot back.
    fn next_batch(&self) -> Option<Vec<(T, oneshot::Sender<R>)>> {
        let mut queue = self.lock();
        if queue.waiting.is_empty() {
            queue.calls -= 1;
            return None;
        }
        let take = queue.waiting.len().min(self.max_batch);
        Some(queue.waiting.drain(..take).collect())
    }
}

impl<T: Send + 'static, R: Send + 'static> Inner<T, R> {
    /// Sends queued batches until the queue is empty, then frees the slot.
    async fn drain(self: Arc<Self>) {
        while let Some(batch) = self.next_batch() {
            let (items, answers): (Vec<T>, Vec<oneshot::Sender<R>>) = batch.into_iter().unzip();
            for (answer, reply) in answers.into_iter().zip((self.send)(items).await) {
                // A caller that stopped waiting has nothing left to learn.
                drop(answer.send(reply));
            }
        }
    }
}

/// A call slot held by a caller sending its own request; released, it serves whoever queued
/// meanwhile on a task of its own, so the caller returns its answer without waiting for theirs.
struct Slot<T: Send + 'static, R: Send + 'static>(Arc<Inner<T, R>>);

impl<T: Send + 'static, R: Send + 'static> Drop for Slot<T, R> {
    fn drop(&mut self) {
        let mut queue = self.0.lock();
        // Without a runtime (a node shutting down) nobody is left to serve.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) if !queue.waiting.is_empty() => {
                drop(queue);
                runtime.spawn(self.0.clone().drain());
            }
            _ => queue.calls -= 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A sender that records batch sizes and answers each item with twice its value after `delay`.
    fn doubling(sizes: Arc<Mutex<Vec<usize>>>, delay: std::time::Duration) -> SendBatch<u32, u32> {
        Box::new(move |items: Vec<u32>| {
            let sizes = sizes.clone();
            Box::pin(async move {
                sizes.lock().unwrap().push(items.len());
                tokio::time::sleep(delay).await;
                items.into_iter().map(|i| i * 2).collect()
            })
        })
    }

    #[tokio::test]
    async fn a_lone_call_goes_alone_and_concurrent_ones_share_calls() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let batcher = Arc::new(Batcher::new(1, 100, doubling(sizes.clone(), std::time::Duration::from_millis(20))));
        assert_eq!(batcher.call(21).await, Some(42));
        assert_eq!(*sizes.lock().unwrap(), vec![1]);

        let calls: Vec<_> = (0..50u32)
            .map(|i| {
                let b = batcher.clone();
                tokio::spawn(async move { (i, b.call(i).await) })
            })
            .collect();
        for call in calls {
            let (i, answer) = call.await.unwrap();
            assert_eq!(answer, Some(i * 2), "every caller gets its own answer");
        }
        let sizes = sizes.lock().unwrap();
        assert_eq!(sizes.iter().sum::<usize>(), 51, "every item was sent once: {sizes:?}");
        assert!(sizes.len() <= 4, "50 callers behind one busy slot share a few calls, got {sizes:?}");
        assert_eq!(batcher.inner.lock().calls, 0, "every slot was given back");
    }

    #[tokio::test]
    async fn a_caller_that_gives_up_frees_its_slot_for_the_queue() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let batcher = Arc::new(Batcher::new(1, 100, doubling(sizes, std::time::Duration::from_millis(50))));
        let impatient = {
            let b = batcher.clone();
            tokio::spawn(async move { tokio::time::timeout(std::time::Duration::from_millis(5), b.call(1)).await })
        };
        // The impatient caller holds the one slot before the patient one queues.
        while batcher.inner.lock().calls == 0 {
            tokio::task::yield_now().await;
        }
        let patient = {
            let b = batcher.clone();
            tokio::spawn(async move { b.call(2).await })
        };
        assert!(impatient.await.unwrap().is_err(), "the first caller timed out");
        assert_eq!(patient.await.unwrap(), Some(4), "the queued caller was served after the slot came free");
        assert_eq!(batcher.inner.lock().calls, 0);
    }

    #[tokio::test]
    async fn batches_are_capped() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let batcher = Arc::new(Batcher::new(1, 8, doubling(sizes.clone(), std::time::Duration::from_millis(10))));
        let served = Arc::new(AtomicUsize::new(0));
        let calls: Vec<_> = (0..40u32)
            .map(|i| {
                let (b, served) = (batcher.clone(), served.clone());
                tokio::spawn(async move {
                    assert_eq!(b.call(i).await, Some(i * 2));
                    served.fetch_add(1, Ordering::Relaxed);
                })
            })
            .collect();
        for call in calls {
            call.await.unwrap();
        }
        assert_eq!(served.load(Ordering::Relaxed), 40);
        assert!(sizes.lock().unwrap().iter().all(|&n| n <= 8), "{:?}", sizes.lock().unwrap());
    }
}
