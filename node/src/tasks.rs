//! The node's background tasks: each runs until it is told to stop (or ends), in one set the node stops as one
//! stage of its shutdown ([`crate::node`]). Components with a task of their own (the L1 followers, the forwarder,
//! the commitment poster) are handed the set and start their task in it instead of spawning it detached, so that
//! nothing the node starts outlives its stop.

use std::future::Future;
use std::time::Duration;

use tracing::warn;

/// The node's background tasks (L1 followers, forwarder, poster, pruning, metrics observers), by name.
pub struct Tasks {
    set: tokio::task::JoinSet<&'static str>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Tasks {
    pub fn new() -> Self {
        Tasks {
            set: tokio::task::JoinSet::new(),
            stop: tokio::sync::watch::channel(false).0,
        }
    }

    /// A future that resolves when the tasks are told to stop.
    pub fn stop_signal(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.stop.subscribe();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    }

    /// Runs `body` until it ends or the tasks are told to stop.
    pub fn spawn(&mut self, name: &'static str, body: impl Future<Output = ()> + Send + 'static) {
        let stop = self.stop_signal();
        self.set.spawn(async move {
            tokio::select! {
                _ = stop => {}
                _ = body => {}
            }
            name
        });
    }

    /// Tells every task to stop and waits for them (at most `grace`, then aborts the rest).
    pub async fn stop(mut self, grace: Duration) {
        let _ = self.stop.send(true);
        let all = async { while self.set.join_next().await.is_some() {} };
        if tokio::time::timeout(grace, all).await.is_err() {
            warn!(
                left = self.set.len(),
                "background tasks did not stop in time; aborting them"
            );
            self.set.abort_all();
        }
    }
}

impl Default for Tasks {
    fn default() -> Self {
        Self::new()
    }
}
