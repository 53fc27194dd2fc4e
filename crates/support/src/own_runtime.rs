//! A tokio runtime of a client's own, for callers that block: the store traits are blocking, and
//! their callers may be threads of another runtime, where blocking on a future directly is not
//! allowed. The etcd and Kubernetes stores each run their client on one.

use std::future::Future;
use std::time::Duration;

/// Why [`OwnRuntime::run`] has no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unanswered {
    /// The work did not finish within its limit.
    TimedOut,
    /// The runtime stopped (the client is being dropped).
    Stopped,
}

pub struct OwnRuntime(Option<tokio::runtime::Runtime>);

impl OwnRuntime {
    /// A multi-threaded runtime of `workers` threads named `name`.
    pub fn new(name: &str, workers: usize) -> std::io::Result<Self> {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .thread_name(name)
            .enable_all()
            .build()
            .map(|runtime| OwnRuntime(Some(runtime)))
    }

    /// The runtime itself, to start tasks on or to set up a client in.
    pub fn runtime(&self) -> &tokio::runtime::Runtime {
        self.0.as_ref().expect("the runtime lives until it is dropped")
    }

    /// Runs `future` on this runtime and waits for it, at most `limit`.
    pub fn run<T: Send + 'static>(
        &self,
        future: impl Future<Output = T> + Send + 'static,
        limit: Duration,
    ) -> Result<T, Unanswered> {
        let (sender, receiver) = std::sync::mpsc::sync_channel(1);
        self.runtime().spawn(async move {
            let _ = sender.send(tokio::time::timeout(limit, future).await);
        });
        match receiver.recv() {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => Err(Unanswered::TimedOut),
            Err(_) => Err(Unanswered::Stopped),
        }
    }
}

impl Drop for OwnRuntime {
    fn drop(&mut self) {
        // Dropped, perhaps, on another runtime's thread, where a blocking shutdown panics.
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_within_the_limit_and_says_when_it_cannot() {
        let own = OwnRuntime::new("test-runtime", 1).unwrap();
        assert_eq!(own.run(async { 7 }, Duration::from_secs(1)), Ok(7));
        let slow = own.run(
            async { tokio::time::sleep(Duration::from_secs(5)).await },
            Duration::from_millis(50),
        );
        assert_eq!(slow, Err(Unanswered::TimedOut));
    }
}
