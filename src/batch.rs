//! Opportunistic batching of calls to one destination.
//!
//! A caller that finds a call slot free takes it, yields once, and sends its request from its own
//! task, alone unless others queued during the yield: an idle system pays no timer and no extra
//! task hop. Requests that a node reads off its connections in one pass arrive together, and the
//! yield lets them share the call; without it, the first went alone and the rest waited for the
//! next call (at 64 clients, over 40% of a follower's forward calls carried one write). While
//! every slot is busy, requests wait in a queue; the call that frees a slot hands the whole queue
//! to a new task as one batch. Batches therefore grow with the load and never wait for a timer,
//! and the destination handles one call where it would have handled dozens.

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
                let slot = Slot(self.inner.clone());
                // Requests that arrived with this one are still on their way here on this thread:
                // one yield lets them queue, and they ride in this call instead of the next.
                tokio::task::yield_now().await;
                match self.inner.join_queue(item) {
                    Ok(answered) => {
                        // The queue, this item first, goes as one batch from the slot's own task,
                        // so this caller giving up does not cancel the others' call.
                        drop(slot);
                        answered.await.ok()
                    }
                    Err(item) => (self.inner.send)(vec![item]).await.into_iter().next(),
                }
            }
            Err(answered) => answered.await.ok(),
        }
    }
}

impl<T, R> Inner<T, R> {
    fn lock(&self) -> MutexGuard<'_, Queue<T, R>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Puts `item` at the head of the queue if anyone is waiting there, or hands it back.
    fn join_queue(&self, item: T) -> Result<oneshot::Receiver<R>, T> {
        let mut queue = self.lock();
        if queue.waiting.is_empty() {
            return Err(item);
        }
        let (answer, answered) = oneshot::channel();
        queue.waiting.insert(0, (item, answer));
        Ok(answered)
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

    /// Calls `batcher` from `n` tasks spawned together; each must get its own answer.
    async fn call_together(batcher: &Arc<Batcher<u32, u32>>, n: u32) {
        let calls: Vec<_> = (0..n)
            .map(|i| {
                let b = batcher.clone();
                tokio::spawn(async move { (i, b.call(i).await) })
            })
            .collect();
        for call in calls {
            let (i, answer) = call.await.unwrap();
            assert_eq!(answer, Some(i * 2), "every caller gets its own answer");
        }
    }

    #[tokio::test]
    async fn a_lone_call_goes_alone_and_concurrent_ones_share_calls() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let batcher = Arc::new(Batcher::new(1, 100, doubling(sizes.clone(), std::time::Duration::from_millis(20))));
        assert_eq!(batcher.call(21).await, Some(42));
        assert_eq!(*sizes.lock().unwrap(), vec![1]);

        call_together(&batcher, 50).await;
        let sizes = sizes.lock().unwrap();
        assert_eq!(sizes.iter().sum::<usize>(), 51, "every item was sent once: {sizes:?}");
        assert!(sizes.len() <= 4, "50 callers behind one busy slot share a few calls, got {sizes:?}");
        assert_eq!(batcher.inner.lock().calls, 0, "every slot was given back");
    }

    /// Callers that arrive in one pass of the (single-threaded) runtime share the first call,
    /// though a slot was free for each of the first two.
    #[tokio::test]
    async fn callers_that_arrive_together_share_one_call() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let batcher = Arc::new(Batcher::new(2, 100, doubling(sizes.clone(), std::time::Duration::from_millis(5))));
        call_together(&batcher, 10).await;
        assert_eq!(*sizes.lock().unwrap(), vec![10], "the ten went in one call");
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
        call_together(&batcher, 40).await;
        assert!(sizes.lock().unwrap().iter().all(|&n| n <= 8), "{:?}", sizes.lock().unwrap());
    }
}
