//! Waiting until every simulated client (agent or proxy) that should see a change received it,
//! without hanging on one that never will.

use std::time::{Duration, Instant};

/// A client whose session ended this many times since a wait began, the first of them this long
/// ago, is taken not to deliver: when that holds for every client still waiting, the wait gives up
/// instead of running into its timeout. (A message over the size limit fails every time; a
/// connection refused while the server is busy, which a retry gets through, does not last 30 s.)
const FAILURES_THAT_STOP_A_WAIT: usize = 3;
const FAILING_FOR: Duration = Duration::from_secs(30);

/// A set of simulated clients that record what they received.
pub trait Watched {
    /// When client `n` first received something with marker `id` at or after `since`.
    fn seen_at(&self, n: usize, id: u32, since: Instant) -> Option<Instant>;
    /// Client `n`'s sessions that ended since `since`: when (in order) and why.
    fn failures_since(&self, n: usize, since: Instant) -> Vec<(Instant, String)>;
    fn name(&self, n: usize) -> String;
}

/// Those of `failures` at or after `since`.
pub fn failures_since(failures: &[(Instant, String)], since: Instant) -> Vec<(Instant, String)> {
    failures.iter().filter(|(at, _)| *at >= since).cloned().collect()
}

/// True when `failures` say the client keeps failing (see [`FAILURES_THAT_STOP_A_WAIT`]).
fn keeps_failing(failures: &[(Instant, String)]) -> bool {
    failures.len() >= FAILURES_THAT_STOP_A_WAIT && failures[0].0.elapsed() >= FAILING_FOR
}

/// Waits until each of clients `which` has received marker `id` after `since`; returns how long
/// after `since` each did. Gives up after `limit`, or as soon as every client still waiting has
/// had its stream fail repeatedly.
pub async fn wait(
    clients: &impl Watched,
    id: u32,
    which: &[usize],
    since: Instant,
    limit: Duration,
) -> Result<Vec<Duration>, String> {
    let deadline = since + limit;
    loop {
        let pending: Vec<usize> = which
            .iter()
            .copied()
            .filter(|&n| clients.seen_at(n, id, since).is_none())
            .collect();
        if pending.is_empty() {
            return Ok(which
                .iter()
                .map(|&n| clients.seen_at(n, id, since).expect("seen").duration_since(since))
                .collect());
        }
        let got = which.len() - pending.len();
        if let Some(reason) = super::process::stopped() {
            return Err(format!("did not converge ({got}/{} got it): {reason}", which.len()));
        }
        if pending
            .iter()
            .all(|&n| keeps_failing(&clients.failures_since(n, since)))
        {
            let failures = clients.failures_since(pending[0], since);
            return Err(format!(
                "did not converge: {got}/{} got it; the streams of the other {} keep failing (each {}+ times over {}+ s since the change), e.g. {}: {}",
                which.len(),
                pending.len(),
                FAILURES_THAT_STOP_A_WAIT,
                FAILING_FOR.as_secs(),
                clients.name(pending[0]),
                failures.last().map(|(_, e)| e.as_str()).unwrap_or_default()
            ));
        }
        if Instant::now() >= deadline {
            let failures = clients.failures_since(pending[0], since);
            let note = failures
                .last()
                .map(|(_, e)| {
                    format!(
                        "; {} had {} stream failures meanwhile, the last: {e}",
                        clients.name(pending[0]),
                        failures.len()
                    )
                })
                .unwrap_or_default();
            return Err(format!(
                "did not converge within {:.0} s: {got}/{} got it{note}",
                limit.as_secs_f64(),
                which.len()
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
