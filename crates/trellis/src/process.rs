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

/// A free TCP port on loopback. The port is released before use, so another process may take
/// it in between; good enough for local meshes and tests, which retry on bind errors.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("bind an ephemeral port")
}
