//! Logging set-up shared by every role.

use tracing_subscriber::EnvFilter;

/// Logs to stderr; `RUST_LOG` overrides the default of `info`.
pub fn init(role: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,h2=warn,tower=warn,hyper=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        // Colour codes only on a terminal: log files stay greppable.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
    tracing::debug!(role, "logging ready");
}
