//! `trellis dashboard`: opens the management server's web UI in a browser, signed in with this
//! client's token (the token travels in the URL's fragment, which browsers never send to a
//! server, and the page moves it into the tab's sessionStorage at once).

use anyhow::Context;

use crate::api_client::ServerArgs;

#[derive(Debug, Clone, clap::Args)]
pub struct DashboardArgs {
    /// Print the address instead of opening a browser.
    #[arg(long)]
    pub no_browser: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

pub async fn dashboard(args: DashboardArgs) -> anyhow::Result<()> {
    let client = args.server.client()?;
    // The credential must work before a browser is sent with it.
    let response = client
        .get("/api/v1/whoami")
        .await
        .context("cannot reach the management server API")?;
    anyhow::ensure!(
        response.status == 200,
        "the server refused this client's credential (HTTP {}): {}",
        response.status,
        response.body.trim()
    );
    let me: serde_json::Value = serde_json::from_str(&response.body).context("the server's answer is not JSON")?;
    let page = format!("{}/ui/", client.server);
    let signed_in = match client.token() {
        Some(token) => format!("{page}#token={}", crate::client::encode(token)),
        None => page.clone(),
    };
    if !args.no_browser && open_browser(&signed_in) {
        println!("Opened {page} as {}.", me["user"].as_str().unwrap_or("?"));
    } else {
        println!("The UI is at {page}");
        if client.token().is_some() {
            println!(
                "It asks for an API token: paste this client's (the token file its context names, see `trellis config get-contexts`), or open the address with `#token=<token>` appended."
            );
        }
    }
    Ok(())
}

/// Starts the desktop's browser on `url`; false where there is none (a server, CI).
fn open_browser(url: &str) -> bool {
    let opener = if cfg!(target_os = "macos") { "open" } else { "xdg-open" };
    std::process::Command::new(opener)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}
