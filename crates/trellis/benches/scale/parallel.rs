//! Many setup steps (registrations), a bounded number at a time: the servers limit handshakes
//! and registrations in progress, and the benchmark measures them, not their flood protection.

use std::sync::Arc;

use tokio::sync::Semaphore;

/// Runs `make(0) .. make(count - 1)`, at most `concurrency` at once; the results in that order.
pub async fn bounded<T, Fut>(count: usize, concurrency: usize, make: impl Fn(usize) -> Fut) -> Vec<T>
where
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let permits = Arc::new(Semaphore::new(concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..count {
        let permit = permits
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let step = make(i);
        tasks.spawn(async move {
            let output = step.await;
            drop(permit);
            (i, output)
        });
    }
    let mut results: Vec<Option<T>> = (0..count).map(|_| None).collect();
    while let Some(joined) = tasks.join_next().await {
        let (i, output) = joined.expect("a setup step panicked");
        results[i] = Some(output);
    }
    results.into_iter().map(|r| r.expect("every step ran")).collect()
}
