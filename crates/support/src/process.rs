//! Child processes that must not outlive their parent, signals, and bounded shutdown.

use std::future::Future;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::sync::watch;

/// Spawns `command` so that it receives SIGTERM when this process dies, however it dies: a
/// sidecar's Envoy must not keep serving after `trellis proxy` is killed.
pub fn spawn_tied(mut command: Command, quiet: bool) -> std::io::Result<Child> {
    if quiet {
        command.stdout(Stdio::null()).stderr(Stdio::null());
    }
    command.kill_on_drop(true);
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command.spawn()
}

/// Asks a child to stop (SIGTERM), waits up to `grace`, then kills it.
pub async fn terminate(child: &mut Child, grace: std::time::Duration) {
    if let Some(pid) = child.id() {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe {
            libc::kill(pid as i32, libc::SIGTERM);
        }
    }
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        let _ = child.kill().await;
    }
}

/// How long `trellis mgmt` and `trellis agent` drain their connections after SIGTERM before they
/// exit anyway.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A shutdown that many tasks can wait for, requested once (by SIGTERM or Ctrl-C). Long-lived
/// streams (the relay's, ADS) never end on their own, so their tasks select on
/// [`Shutdown::requested`] and end them.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// Listens for SIGTERM and Ctrl-C from now on. Needs a Tokio runtime.
    pub fn on_signal() -> Shutdown {
        let (tx, rx) = watch::channel(false);
        tokio::spawn(async move {
            shutdown_signal().await;
            tracing::info!(grace = ?SHUTDOWN_GRACE, "shutting down");
            let _ = tx.send(true);
        });
        Shutdown(rx)
    }

    /// Resolves once shutdown is requested (at once if it already was).
    pub async fn requested(&self) {
        let mut rx = self.0.clone();
        // An error means the sender is gone without a request: then there will never be one.
        if rx.wait_for(|requested| *requested).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Runs `work` to its end or, once shutdown is requested, for `grace` more at most: tonic's and
/// hyper's graceful shutdowns wait for every open stream, and a peer that keeps one open must
/// not keep this process alive. `None` when the grace ran out.
pub async fn drain<T>(shutdown: &Shutdown, work: impl Future<Output = T>, grace: Duration, what: &str) -> Option<T> {
    tokio::pin!(work);
    tokio::select! {
        output = &mut work => return Some(output),
        () = shutdown.requested() => {}
    }
    match tokio::time::timeout(grace, work).await {
        Ok(output) => Some(output),
        Err(_) => {
            tracing::warn!(
                ?grace,
                what,
                "connections still open after the shutdown grace period; exiting anyway"
            );
            None
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// A free TCP port on loopback for a listener that another process will bind.
///
/// Ports come from below the kernel's ephemeral range (`ip_local_port_range`): an ephemeral
/// port picked now could be taken a moment later as the source port of some outgoing
/// connection, and Envoy would then fail to bind its listener. Within one process no port is
/// handed out twice; processes start at different offsets (by pid) to stay out of each other's way.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static HANDED_OUT: AtomicU32 = AtomicU32::new(0);
    let (low, high) = listener_port_range();
    let span = high - low;
    let offset = std::process::id().wrapping_mul(7919) % span;
    for _ in 0..span {
        let n = HANDED_OUT.fetch_add(1, Ordering::Relaxed);
        let port = (low + (offset + n) % span) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a port")
}

/// `[10000, start of the ephemeral range)`, or a fixed fallback where that range is odd.
fn listener_port_range() -> (u32, u32) {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| text.split_whitespace().next().and_then(|n| n.parse::<u32>().ok()))
        .unwrap_or(32768);
    if ephemeral_low > 11000 {
        (10000, ephemeral_low)
    } else {
        (61000, 65535)
    }
}
