//! `trellis debug report`: one archive of the mesh's state for a support case, read through
//! the API with the caller's own rights, secrets redacted before anything is written.
//!
//! The archive is a plain POSIX tar (no compression: no extra dependency, and `tar -xf`
//! reads it everywhere). What the caller may not read (the audit log for a viewer) is noted in
//! `errors.txt` rather than failing the report.

use std::path::PathBuf;

use anyhow::Context;
use serde_json::Value;

use crate::api_client::ServerArgs;

#[derive(Debug, Clone, clap::Args)]
pub struct DebugReportArgs {
    /// Where to write the archive [default: trellis-debug-<unix time>.tar]
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, clap::Subcommand)]
pub enum DebugCommand {
    /// Write one archive of the mesh's state (resources, statuses, clusters, checks, per-cluster
    /// translation, recent audit), secrets redacted, to attach to a support case.
    Report(DebugReportArgs),
}

/// What goes in, each from one API path.
const PARTS: &[(&str, &str)] = &[
    ("version.json", "/api/v1/version"),
    ("whoami.json", "/api/v1/whoami"),
    ("clusters.json", "/api/v1/clusters"),
    ("check.json", "/api/v1/check"),
    ("insights.json", "/api/v1/insights?all=true"),
    ("resources.json", "/api/v1/resources"),
    ("translation.json", "/api/v1/translation"),
    ("graph.json", "/api/v1/graph"),
    ("audit.json", "/api/v1/audit?limit=500"),
];

pub async fn run(command: DebugCommand) -> anyhow::Result<()> {
    let DebugCommand::Report(args) = command;
    let client = args.server.client()?;
    // A report of nothing but refusals helps nobody: the credential must work first.
    let me = client
        .get("/api/v1/whoami")
        .await
        .context("cannot reach the management server API")?;
    anyhow::ensure!(
        me.status == 200,
        "the server refused this client's credential (HTTP {}): {}",
        me.status,
        me.body.trim()
    );
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let mut errors = String::new();
    for (name, path) in PARTS {
        match client.get(path).await {
            Ok(response) if response.status == 200 => {
                let mut value: Value = serde_json::from_str(&response.body)
                    .with_context(|| format!("{path}: the server's answer is not JSON"))?;
                redact(&mut value);
                files.push((name.to_string(), serde_json::to_vec_pretty(&value)?));
            }
            Ok(response) => errors.push_str(&format!("{path}: HTTP {}: {}\n", response.status, response.body.trim())),
            Err(error) => errors.push_str(&format!("{path}: {error:#}\n")),
        }
    }
    files.push((
        "client.txt".into(),
        format!(
            "client: trellis {}\nserver: {}\n",
            env!("CARGO_PKG_VERSION"),
            client.server
        )
        .into_bytes(),
    ));
    if !errors.is_empty() {
        files.push(("errors.txt".into(), errors.into_bytes()));
    }
    let now = trellis_support::unix_now();
    let output = args
        .output
        .unwrap_or_else(|| PathBuf::from(format!("trellis-debug-{now}.tar")));
    let archive = tar(&format!("trellis-debug-{now}"), &files, now);
    trellis_support::files::write_private_bytes(&output, &archive)
        .with_context(|| format!("cannot write {}", output.display()))?;
    println!("Wrote {} ({} files, secrets redacted).", output.display(), files.len());
    Ok(())
}

/// Keys whose string values are credentials wherever they appear.
fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "secret",
        "password",
        "token",
        "privatekey",
        "private_key",
        "apikey",
        "api_key",
        "credential",
        "authorization",
        "cookie",
    ]
    .iter()
    .any(|word| key.contains(word))
}

/// Blanks every credential in `value`: whole `data`/`stringData` of Secrets, API key lists,
/// and any value under a key that names a credential.
pub fn redact(value: &mut Value) {
    match value {
        Value::Object(map) => {
            let is_secret_resource = map.get("kind").and_then(Value::as_str) == Some("Secret");
            for (key, inner) in map.iter_mut() {
                // `keys`: API keys (as digests, still worth a dictionary attack) of apiKeyAuth.
                let whole = (is_secret_resource && (key == "data" || key == "stringData")) || key == "keys";
                let credential = is_secret_key(key) && !inner.is_object() && !inner.is_array() && !inner.is_null();
                if whole || credential {
                    *inner = Value::String("[redacted]".into());
                } else {
                    redact(inner);
                }
            }
        }
        Value::Array(list) => list.iter_mut().for_each(redact),
        _ => {}
    }
}

/// A POSIX ustar archive of `files` under the directory `root`.
fn tar(root: &str, files: &[(String, Vec<u8>)], mtime: u64) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, body) in files {
        let mut header = [0u8; 512];
        let path = format!("{root}/{name}");
        header[..path.len().min(100)].copy_from_slice(&path.as_bytes()[..path.len().min(100)]);
        let octal = |field: &mut [u8], value: u64| {
            let text = format!("{:0width$o}\0", value, width = field.len() - 1);
            field.copy_from_slice(text.as_bytes());
        };
        octal(&mut header[100..108], 0o600);
        octal(&mut header[108..116], 0);
        octal(&mut header[116..124], 0);
        octal(&mut header[124..136], body.len() as u64);
        octal(&mut header[136..148], mtime);
        header[156] = b'0';
        header[257..263].copy_from_slice(b"ustar\0");
        header[263..265].copy_from_slice(b"00");
        // The checksum is computed with its own field as spaces.
        header[148..156].copy_from_slice(b"        ");
        let sum: u64 = header.iter().map(|b| *b as u64).sum();
        let text = format!("{sum:06o}\0 ");
        header[148..156].copy_from_slice(text.as_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(body);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn credentials_are_redacted_wherever_they_are() {
        let mut value = json!({
            "items": [
                {"kind": "Secret", "metadata": {"name": "s"}, "data": {"key": "c2VjcmV0"}},
                {"kind": "ExtAuthPolicy", "spec": {"config": {"apiKeyAuth": {"headerName": "x-api-key", "keys": ["ab12"]}}, "clientSecret": "abc", "password": "p"}},
            ],
            "token": "t",
            "key": "outbound_.80_._.backend.mesh.internal"
        });
        redact(&mut value);
        assert_eq!(value["items"][0]["data"], "[redacted]");
        assert_eq!(value["items"][1]["spec"]["clientSecret"], "[redacted]");
        assert_eq!(value["items"][1]["spec"]["password"], "[redacted]");
        assert_eq!(value["token"], "[redacted]");
        assert_eq!(value["items"][1]["spec"]["config"]["apiKeyAuth"]["keys"], "[redacted]");
        // Not credentials: kept, a support engineer needs them.
        assert_eq!(
            value["items"][1]["spec"]["config"]["apiKeyAuth"]["headerName"],
            "x-api-key"
        );
        assert_eq!(value["key"], "outbound_.80_._.backend.mesh.internal");
    }

    #[test]
    fn the_archive_is_whole_blocks_with_valid_header_checksums() {
        let archive = tar(
            "r",
            &[("a.json".into(), b"{}".to_vec()), ("b.txt".into(), vec![b'x'; 600])],
            1,
        );
        assert_eq!(archive.len() % 512, 0);
        assert_eq!(archive.len(), 512 + 512 + 512 + 1024 + 1024);
        let header = &archive[..512];
        assert_eq!(&header[..8], b"r/a.json");
        let stored = u64::from_str_radix(std::str::from_utf8(&header[148..154]).unwrap(), 8).unwrap();
        let mut blank = header.to_vec();
        blank[148..156].copy_from_slice(b"        ");
        assert_eq!(stored, blank.iter().map(|b| *b as u64).sum::<u64>());
    }
}
