//! `trellis insights [--all] [-o json]` and `trellis insights silence|unsilence|silences`.
//! Like `trellis check`, it exits non-zero while an error-severity insight is active, so a
//! script can gate on it; silenced insights do not count.

use anyhow::Context;
use serde_json::{Value, json};

use crate::api_client::ServerArgs;

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct InsightsArgs {
    #[command(subcommand)]
    pub command: Option<InsightsCommand>,
    /// Also list silenced insights (they never count toward the exit code).
    #[arg(long)]
    pub all: bool,
    /// `json`: the API's answer as it is.
    #[arg(short = 'o', long)]
    pub output: Option<String>,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, clap::Subcommand)]
pub enum InsightsCommand {
    /// Hide an insight code, everywhere or on one target (admin only).
    Silence(SilenceArgs),
    /// Lift a silence given with the same code and target (admin only).
    Unsilence(SilenceArgs),
    /// List the silences.
    Silences(ServerArgs),
}

#[derive(Debug, clap::Args)]
pub struct SilenceArgs {
    /// The insight code, e.g. TRL0018.
    pub code: String,
    /// Only this target, as `trellis insights` prints it (e.g. AccessPolicy/demo/web);
    /// without it the code is silenced everywhere.
    #[arg(long)]
    pub target: Option<String>,
    #[command(flatten)]
    pub server: ServerArgs,
}

pub async fn run(args: InsightsArgs) -> anyhow::Result<()> {
    match args.command {
        None => list(&args.server, args.all, args.output.as_deref()).await,
        Some(InsightsCommand::Silence(silence)) => {
            let body = json!({ "code": silence.code, "target": silence.target });
            let response = silence
                .server
                .client()?
                .post_json("/api/v1/insights/silences", &body)
                .await
                .context("cannot reach the management server API")?;
            anyhow::ensure!(
                response.status == 200,
                "silence refused: HTTP {}: {}",
                response.status,
                response.body
            );
            println!(
                "silenced {} on {}",
                silence.code,
                silence.target.as_deref().unwrap_or("every target")
            );
            Ok(())
        }
        Some(InsightsCommand::Unsilence(silence)) => {
            let mut path = format!("/api/v1/insights/silences?code={}", encode(&silence.code));
            if let Some(target) = &silence.target {
                path.push_str(&format!("&target={}", encode(target)));
            }
            let response = silence
                .server
                .client()?
                .request("DELETE", &path, None)
                .await
                .context("cannot reach the management server API")?;
            anyhow::ensure!(
                response.status == 200,
                "unsilence refused: HTTP {}: {}",
                response.status,
                response.body
            );
            println!(
                "lifted the silence of {} on {}",
                silence.code,
                silence.target.as_deref().unwrap_or("every target")
            );
            Ok(())
        }
        Some(InsightsCommand::Silences(server)) => {
            let body = server.client()?.get_json("/api/v1/insights/silences").await?;
            println!("{:<8} {:<48} {:<16} CREATED", "CODE", "TARGET", "BY");
            for silence in body["silences"].as_array().into_iter().flatten() {
                println!(
                    "{:<8} {:<48} {:<16} {}",
                    silence["code"].as_str().unwrap_or(""),
                    silence["target"].as_str().unwrap_or("*"),
                    silence["createdBy"].as_str().unwrap_or(""),
                    silence["createdAt"]
                );
            }
            Ok(())
        }
    }
}

async fn list(server: &ServerArgs, all: bool, output: Option<&str>) -> anyhow::Result<()> {
    let path = if all {
        "/api/v1/insights?all=true"
    } else {
        "/api/v1/insights"
    };
    let body: Value = server
        .client()?
        .get_json(path)
        .await
        .context("cannot get insights from the management server API")?;
    match output {
        Some("json") => println!("{}", serde_json::to_string_pretty(&body)?),
        Some(other) => anyhow::bail!("-o {other}: use json, or leave it out for a table"),
        None => print_table(&body),
    }
    let errors = body["errors"].as_u64().unwrap_or(0);
    anyhow::ensure!(errors == 0, "insights found {errors} error(s)");
    Ok(())
}

fn print_table(body: &Value) {
    println!("{:<8} {:<8} {:<48} SUMMARY", "SEVERITY", "CODE", "TARGET");
    for insight in body["insights"].as_array().into_iter().flatten() {
        let mut severity = insight["severity"].as_str().unwrap_or("").to_uppercase();
        if insight["silenced"] == true {
            severity = format!("({})", severity.to_lowercase());
        }
        println!(
            "{severity:<8} {:<8} {:<48} {}",
            insight["code"].as_str().unwrap_or(""),
            insight["target"].as_str().unwrap_or(""),
            insight["summary"].as_str().unwrap_or("")
        );
        println!("{:<66}fix: {}", "", insight["fix"].as_str().unwrap_or(""));
    }
    let count = |key: &str| body[key].as_u64().unwrap_or(0);
    let silenced = count("silenced");
    let hint = if silenced > 0 { " (--all lists them)" } else { "" };
    println!(
        "\n{} error(s), {} warning(s), {} info; {silenced} silenced{hint}",
        count("errors"),
        count("warnings"),
        count("infos")
    );
}

/// A query value percent-encoded: what targets hold besides letters and digits (`/`, `~`, `.`)
/// must reach the server as written.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_keep_targets_intact() {
        assert_eq!(encode("AccessPolicy/demo/web"), "AccessPolicy/demo/web");
        assert_eq!(encode("a&b=c d"), "a%26b%3Dc%20d");
    }
}
