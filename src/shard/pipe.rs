//! One direction of the mesh: a bounded lock-free queue between two shards
//! and the two wakers that park its ends.
//!
//! glommio's shared channel wakes the *sending* executor after every pop
//! if that executor sleeps, in case it waits for room. With a quiet mesh
//! the sender always sleeps, so each delivery cost a second, useless wake-up
//! of the sending core: an eventfd write, then ~10 `io_uring_enter` calls and
//! a membarrier there (seen with `perf trace` at 20 msg/s). Here a pop wakes
//! the sender only if it registered as waiting for room, and a push wakes
//! the receiver only if it registered as idle. The wake of a task owned by
//! another executor is glommio's foreign wake, which writes that executor's
//! eventfd only while it sleeps; under load neither end is registered and a
//! push or pop costs a CAS and no syscall.

use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;

use atomic_waker::AtomicWaker;
use crossbeam_queue::ArrayQueue;

#[derive(Debug)]
struct Pipe<T> {
    queue: ArrayQueue<T>,
    /// The receiver found the queue empty.
    receiver_idle: AtomicWaker,
    /// The sender found the queue full.
    sender_blocked: AtomicWaker,
    /// Either end was dropped.
    closed: AtomicBool,
}

/// The sending end; dropping it ends the receiver's stream once drained.
#[derive(Debug)]
pub struct PipeSender<T>(Arc<Pipe<T>>);

/// The receiving end; dropping it makes sends fail.
#[derive(Debug)]
pub struct PipeReceiver<T>(Arc<Pipe<T>>);

/// A pipe holding at most `capacity` items (at least one).
pub fn pipe<T>(capacity: usize) -> (PipeSender<T>, PipeReceiver<T>) {
    let p = Arc::new(Pipe {
        queue: ArrayQueue::new(capacity.max(1)),
        receiver_idle: AtomicWaker::new(),
        sender_blocked: AtomicWaker::new(),
        closed: AtomicBool::new(false),
    });
    (PipeSender(p.clone()), PipeReceiver(p))
}

impl<T> PipeSender<T> {
    /// Queues `item`, waiting while the pipe is full.
    ///
    /// # Errors
    /// Gives `item` back if the receiver is gone.
    pub async fn send(&self, item: T) -> Result<(), T> {
        let p = &*self.0;
        let mut item = Some(item);
        poll_fn(|cx| {
            let Some(it) = item.take() else {
                return Poll::Ready(Ok(()));
            };
            if p.closed.load(Ordering::Acquire) {
                return Poll::Ready(Err(it));
            }
            let it = match p.queue.push(it) {
                Ok(()) => {
                    p.receiver_idle.wake();
                    return Poll::Ready(Ok(()));
                }
                Err(it) => it,
            };
            // Register, then try again: a pop between the two would
            // otherwise find no waker and leave us parked with room free.
            p.sender_blocked.register(cx.waker());
            match p.queue.push(it) {
                Ok(()) => {
                    drop(p.sender_blocked.take());
                    p.receiver_idle.wake();
                    Poll::Ready(Ok(()))
                }
                Err(it) => {
                    item = Some(it);
                    Poll::Pending
                }
            }
        })
        .await
    }
}

impl<T> Drop for PipeSender<T> {
    fn drop(&mut self) {
        self.0.closed.store(true, Ordering::Release);
        self.0.receiver_idle.wake();
    }
}

impl<T> PipeReceiver<T> {
    /// The next item, waiting while the pipe is empty; `None` once the
    /// sender is gone and everything it sent was received.
    pub async fn recv(&self) -> Option<T> {
        let p = &*self.0;
        poll_fn(|cx| {
            if let Some(v) = self.pop() {
                return Poll::Ready(Some(v));
            }
            p.receiver_idle.register(cx.waker());
            // Read `closed` before popping: the sender pushes, then closes,
            // so an empty queue after seeing `closed` is empty for good.
            let closed = p.closed.load(Ordering::Acquire);
            match self.pop() {
                Some(v) => Poll::Ready(Some(v)),
                None if closed => Poll::Ready(None),
                None => Poll::Pending,
            }
        })
        .await
    }

    fn pop(&self) -> Option<T> {
        let v = self.0.queue.pop()?;
        self.0.sender_blocked.wake();
        Some(v)
    }
}

impl<T> Drop for PipeReceiver<T> {
    fn drop(&mut self) {
        self.0.closed.store(true, Ordering::Release);
        self.0.sender_blocked.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use glommio::{LocalExecutorBuilder, Placement};

    /// Two executors on two threads, as in the broker: every item arrives
    /// once and in order through a pipe far smaller than the stream, so
    /// both ends park and wake each other many times.
    #[test]
    fn delivers_in_order_across_executors_through_a_full_pipe() {
        const N: u64 = 20_000;
        let (tx, rx) = pipe::<u64>(4);
        let (done, finished) = std::sync::mpsc::channel();
        let _consumer = LocalExecutorBuilder::new(Placement::Unbound)
            .spawn(move || async move {
                let mut next = 0;
                while let Some(v) = rx.recv().await {
                    assert_eq!(v, next);
                    next += 1;
                }
                let _ = done.send(next);
            })
            .expect("consumer");
        let _producer = LocalExecutorBuilder::new(Placement::Unbound)
            .spawn(move || async move {
                for i in 0..N {
                    tx.send(i).await.expect("receiver alive");
                    if i % 500 == 0 {
                        // Let the consumer drain and park on an empty pipe.
                        glommio::timer::sleep(std::time::Duration::from_micros(50)).await;
                    }
                }
            })
            .expect("producer");
        // A lost wake-up parks both ends for good: bound the wait.
        let got = finished
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("pipe stalled or consumer panicked");
        assert_eq!(got, N);
    }

    /// Counts the wake-ups of the task it stands for.
    #[derive(Default)]
    struct Count(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    impl Count {
        fn get(&self) -> usize {
            self.0.load(Ordering::SeqCst)
        }
    }

    fn poll<F: std::future::Future>(
        f: &mut std::pin::Pin<Box<F>>,
        w: &Arc<Count>,
    ) -> Poll<F::Output> {
        let waker = std::task::Waker::from(w.clone());
        f.as_mut().poll(&mut std::task::Context::from_waker(&waker))
    }

    /// The point of the pipe: a pop wakes the sender only if it waited for
    /// room, and a push wakes the receiver only if it waited for an item.
    #[test]
    fn wakes_only_the_end_that_waits() {
        let (tx, rx) = pipe::<u8>(1);
        let (sender, receiver) = (Arc::new(Count::default()), Arc::new(Count::default()));
        let send_now = |v| {
            assert_eq!(
                poll(&mut Box::pin(tx.send(v)), &sender),
                Poll::Ready(Ok(()))
            )
        };
        let recv_now = |v| {
            assert_eq!(
                poll(&mut Box::pin(rx.recv()), &receiver),
                Poll::Ready(Some(v))
            )
        };
        let wakes = || (sender.get(), receiver.get());
        // Neither end parked: no wake-ups at all.
        send_now(1);
        recv_now(1);
        assert_eq!(wakes(), (0, 0));
        // A sender parked on a full pipe is woken by the pop, once.
        send_now(2);
        let mut blocked = Box::pin(tx.send(3));
        assert_eq!(poll(&mut blocked, &sender), Poll::Pending);
        recv_now(2);
        assert_eq!(wakes(), (1, 0));
        assert_eq!(poll(&mut blocked, &sender), Poll::Ready(Ok(())));
        // A receiver parked on an empty pipe is woken by the push, once.
        recv_now(3);
        let mut waiting = Box::pin(rx.recv());
        assert_eq!(poll(&mut waiting, &receiver), Poll::Pending);
        send_now(4);
        assert_eq!(wakes(), (1, 1));
        assert_eq!(poll(&mut waiting, &receiver), Poll::Ready(Some(4)));
        // Later pops find no parked sender: still one wake-up each.
        send_now(5);
        recv_now(5);
        assert_eq!(wakes(), (1, 1));
    }

    #[test]
    fn send_fails_once_the_receiver_is_gone() {
        let (tx, rx) = pipe::<u8>(1);
        drop(rx);
        let r = LocalExecutorBuilder::new(Placement::Unbound)
            .spawn(move || async move { tx.send(7).await })
            .expect("executor")
            .join()
            .expect("join");
        assert_eq!(r, Err(7));
    }
}
