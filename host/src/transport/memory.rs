//! The in-process transport: a bounded queue between the source and the processor.

use streamtap_plugin_sdk::ChatMessage;
use tokio::sync::mpsc;

/// Producer side; cloneable.
#[derive(Clone)]
pub struct MemorySender(mpsc::Sender<ChatMessage>);

/// Consumer side.
pub struct MemoryReceiver {
    rx: mpsc::Receiver<ChatMessage>,
    batch_size: usize,
}

/// The queue was closed by the consumer.
#[derive(Debug, thiserror::Error)]
#[error("memory transport closed")]
pub struct Closed;

/// A queue holding at most `capacity` messages, read in batches of at most `batch_size`.
pub fn channel(capacity: usize, batch_size: usize) -> (MemorySender, MemoryReceiver) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    (
        MemorySender(tx),
        MemoryReceiver {
            rx,
            batch_size: batch_size.max(1),
        },
    )
}

impl MemorySender {
    /// Waits for room, then enqueues.
    pub async fn send(&self, m: ChatMessage) -> Result<(), Closed> {
        self.0.send(m).await.map_err(|_| Closed)
    }

    /// Waits for room and holds it: a caller that may give up waiting (shutdown) keeps
    /// its message instead of losing it inside a dropped `send`.
    pub async fn reserve(&self) -> Result<mpsc::Permit<'_, ChatMessage>, Closed> {
        self.0.reserve().await.map_err(|_| Closed)
    }

    /// Messages waiting in the queue.
    pub fn depth(&self) -> usize {
        self.0.max_capacity() - self.0.capacity()
    }

    /// A handle that reads the queue depth without keeping the queue open.
    pub fn depth_probe(&self) -> DepthProbe {
        DepthProbe(self.0.downgrade())
    }
}

/// Reads queue depth; does not count as a producer, so the queue still closes when the
/// last [`MemorySender`] is dropped.
#[derive(Clone)]
pub struct DepthProbe(mpsc::WeakSender<ChatMessage>);

impl DepthProbe {
    /// Messages waiting, or 0 once the queue is closed.
    pub fn depth(&self) -> usize {
        self.0
            .upgrade()
            .map(|s| s.max_capacity() - s.capacity())
            .unwrap_or(0)
    }
}

impl MemoryReceiver {
    /// The next batch: waits for at least one message, then takes whatever else is queued
    /// up to the batch size. `None` once every sender is gone and the queue is drained.
    pub async fn recv_batch(&mut self) -> Option<Vec<ChatMessage>> {
        let mut buf = Vec::with_capacity(self.batch_size);
        let n = self.rx.recv_many(&mut buf, self.batch_size).await;
        (n > 0).then_some(buf)
    }
}
