use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = trellis::cli::Cli::parse();
    trellis_support::telemetry::init("trellis");
    match trellis::cli::dispatch(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
