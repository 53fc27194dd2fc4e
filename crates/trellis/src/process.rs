//! Child processes that must not outlive their parent, and signals.

use std::process::Stdio;

use tokio::process::{Child, Command};

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
