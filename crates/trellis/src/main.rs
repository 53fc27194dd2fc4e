//! `trellis`: the one binary, every role. It parses the command line and dispatches (`cli`); each
//! role lives in a crate of its own, with the wiring and I/O around the pure crates:
//!
//! ```text
//!  mgmt                  trellis-mgmt             store + PKI + translator + relay server + REST API + metrics
//!  agent                 trellis-agent            relay client + workload registry + cluster CA + ADS/SDS for its Envoys
//!  proxy, gateway        trellis-agent            register with the cluster's agent and run Envoy
//!  ext-auth              trellis-ext-auth-server  Envoy ext_authz v3 around the trellis-extauth engine
//!  rate-limiter          trellis-rate-limiter     Envoy RLS v3 around the trellis-ratelimit engine, counters in Redis
//!  apply, get, ..., up   trellis-cli              the commands people type, the API client, the local demo mesh
//! ```

mod cli;

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    let spans = trellis_support::telemetry::init("trellis", cli.log_format, cli.span_export().as_ref());
    let outcome = cli::dispatch(cli).await;
    // Off the async workers: the flush waits on the exporter's thread.
    let _ = tokio::task::spawn_blocking(move || spans.shutdown()).await;
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
