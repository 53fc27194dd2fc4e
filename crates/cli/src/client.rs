//! `trellis apply`, `get` and `delete`: kubectl-like commands against the REST API.

use std::io::Read;
use std::path::PathBuf;

use anyhow::Context;
use serde_json::Value;
use trellis_api::Kind;
use trellis_support::httpc;

use crate::api_client::ApiClient;
use crate::api_client::ServerArgs;

#[derive(Debug, Clone, clap::Args)]
pub struct ApplyArgs {
    /// File, directory or `-` for stdin; repeatable.
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<PathBuf>,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, Clone, clap::Args)]
pub struct GetArgs {
    /// Kind: name, plural or short name (routetables, rt, vd, ws, wss, kc).
    pub kind: String,
    pub name: Option<String>,
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// List across all namespaces.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// yaml, json or wide.
    #[arg(short = 'o', long)]
    pub output: Option<String>,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, Clone, clap::Args)]
pub struct DeleteArgs {
    /// Delete what these files name.
    #[arg(short = 'f', long = "filename")]
    pub files: Vec<PathBuf>,
    /// Or a kind and a name.
    pub kind: Option<String>,
    pub name: Option<String>,
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    #[command(flatten)]
    pub server: ServerArgs,
}

fn read_source(path: &PathBuf) -> anyhow::Result<(String, String)> {
    if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text)?;
        Ok(("stdin".into(), text))
    } else {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        Ok((path.display().to_string(), text))
    }
}

/// Prints the server's error details, one per line, and fails.
pub fn fail_with(response: &httpc::Response) -> anyhow::Error {
    let body: Value = serde_json::from_str(&response.body).unwrap_or(Value::Null);
    if let Some(details) = body["details"].as_array() {
        for detail in details {
            if let Ok(error) = serde_json::from_value::<trellis_api::DocumentError>(detail.clone()) {
                eprintln!("error: {error}");
            }
        }
    }
    anyhow::anyhow!(
        "{} (HTTP {})",
        body["error"].as_str().unwrap_or(&response.body),
        response.status
    )
}

pub fn encode(source: &str) -> String {
    source
        .bytes()
        .map(|b| {
            // RFC 3986's unreserved characters stay as they are (`~` is in proxy ids).
            if b.is_ascii_alphanumeric() || b"-_./~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

pub async fn apply(args: ApplyArgs) -> anyhow::Result<()> {
    let sources = expand_files(&args.files)?
        .iter()
        .map(read_source)
        .collect::<anyhow::Result<Vec<_>>>()?;
    // Check every file before sending any, so a bad file in a directory applies nothing.
    let mut invalid = false;
    for (source, text) in &sources {
        if let Err(error) = trellis_api::parse_documents(source, text) {
            for detail in error.errors() {
                eprintln!("error: {detail}");
            }
            invalid = true;
        }
    }
    anyhow::ensure!(!invalid, "nothing was applied");
    let api = args.server.client()?;
    for (source, text) in sources {
        let body = post_documents(&api, "apply", &source, text).await?;
        print_results(&body, |r| r["action"].as_str().unwrap_or("?").to_string())?;
    }
    Ok(())
}

/// POSTs one file's documents to `/api/v1/{verb}`; returns the answer, or fails with the
/// server's per-document errors printed.
async fn post_documents(api: &ApiClient, verb: &str, source: &str, text: String) -> anyhow::Result<String> {
    let path = format!("/api/v1/{verb}?source={}", encode(source));
    let response = api
        .request("POST", &path, Some(("application/yaml", text.into_bytes())))
        .await?;
    if response.status != 200 {
        return Err(fail_with(&response));
    }
    Ok(response.body)
}

fn print_results(body: &str, action: impl Fn(&Value) -> String) -> anyhow::Result<()> {
    let body: Value = serde_json::from_str(body)?;
    for result in body["results"].as_array().into_iter().flatten() {
        let key = &result["key"];
        let kind = key["kind"].as_str().and_then(Kind::parse_loose);
        let group = kind
            .map(|k| k.api_version().split('/').next().unwrap_or(""))
            .unwrap_or("");
        println!(
            "{}.{}/{} {}",
            kind.map(|k| k.as_str().to_ascii_lowercase()).unwrap_or_default(),
            group,
            key["name"].as_str().unwrap_or(""),
            action(result)
        );
    }
    Ok(())
}

pub async fn get(args: GetArgs) -> anyhow::Result<()> {
    let kind: Kind = args.kind.parse().map_err(|e: String| anyhow::anyhow!(e))?;
    let api = args.server.client()?;
    let items: Vec<Value> = match &args.name {
        Some(name) => {
            let url = format!("/api/v1/resources/{}/{}/{}", kind.as_str(), args.namespace, name);
            let response = api.get(&url).await?;
            if response.status != 200 {
                return Err(fail_with(&response));
            }
            vec![serde_json::from_str(&response.body)?]
        }
        None => {
            let url = format!("/api/v1/resources?kind={}", kind.as_str());
            let response = api.get(&url).await?;
            if response.status != 200 {
                return Err(fail_with(&response));
            }
            let body: Value = serde_json::from_str(&response.body)?;
            let mut items = body["items"].as_array().cloned().unwrap_or_default();
            if !args.all_namespaces {
                items.retain(|i| i["metadata"]["namespace"] == args.namespace.as_str());
            }
            items
        }
    };
    let single = args.name.is_some();
    match args.output.as_deref() {
        Some("json") => {
            let value = if single {
                items[0].clone()
            } else {
                serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items})
            };
            println!("{}", serde_json::to_string_pretty(&value)?);
        }
        Some("yaml") => {
            let value = if single {
                items[0].clone()
            } else {
                serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items})
            };
            print!("{}", yaml_serde::to_string(&value)?);
        }
        Some("wide") => print_table(&items, args.all_namespaces, true),
        None => print_table(&items, args.all_namespaces, false),
        Some(other) => anyhow::bail!("-o {other}: use yaml, json or wide"),
    }
    if items.is_empty() {
        eprintln!(
            "No resources found in {} namespace.",
            if args.all_namespaces { "any" } else { &args.namespace }
        );
    }
    Ok(())
}

fn strings(value: &Value) -> String {
    value
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(","))
        .unwrap_or_default()
}

fn print_table(items: &[Value], with_namespace: bool, wide: bool) {
    if items.is_empty() {
        return;
    }
    let mut rows = vec![];
    let mut header = vec![];
    if with_namespace {
        header.push("NAMESPACE");
    }
    header.extend(["NAME", "GENERATION", "STATUS"]);
    if wide {
        header.extend(["HOSTS", "DETAIL"]);
    }
    rows.push(header.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    for item in items {
        let meta = &item["metadata"];
        let mut row = vec![];
        if with_namespace {
            row.push(meta["namespace"].as_str().unwrap_or("").to_string());
        }
        row.push(meta["name"].as_str().unwrap_or("").to_string());
        row.push(meta["generation"].to_string());
        row.push(item["status"]["state"].as_str().unwrap_or("PENDING").to_string());
        if wide {
            let spec = &item["spec"];
            row.push(strings(&spec["hosts"]));
            let detail = match item["kind"].as_str() {
                Some("RouteTable") => format!("{} http route(s)", spec["http"].as_array().map_or(0, Vec::len)),
                Some("VirtualDestination") => format!(
                    "ports {}",
                    spec["ports"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|p| p["number"].to_string())
                        .collect::<Vec<_>>()
                        .join(",")
                ),
                Some("Workspace") => format!(
                    "{} cluster selector(s)",
                    spec["workloadClusters"].as_array().map_or(0, Vec::len)
                ),
                _ => String::new(),
            };
            row.push(detail);
        }
        rows.push(row);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let line: Vec<String> = row.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        println!("{}", line.join("   ").trim_end());
    }
}

pub async fn delete(args: DeleteArgs) -> anyhow::Result<()> {
    let api = args.server.client()?;
    if !args.files.is_empty() {
        for (source, text) in expand_files(&args.files)?
            .iter()
            .map(read_source)
            .collect::<anyhow::Result<Vec<_>>>()?
        {
            let body = post_documents(&api, "delete", &source, text).await?;
            print_results(&body, |r| {
                if r["deleted"] == true {
                    "deleted".into()
                } else {
                    "not found".into()
                }
            })?;
        }
        return Ok(());
    }
    let (Some(kind), Some(name)) = (&args.kind, &args.name) else {
        anyhow::bail!("give -f FILE, or KIND NAME");
    };
    let kind: Kind = kind.parse().map_err(|e: String| anyhow::anyhow!(e))?;
    let url = format!("/api/v1/resources/{}/{}/{}", kind.as_str(), args.namespace, name);
    let response = api.request("DELETE", &url, None).await?;
    if response.status != 200 {
        return Err(fail_with(&response));
    }
    print_results(&response.body, |_| "deleted".into())
}

#[derive(Debug, Clone, clap::Args)]
pub struct DescribeArgs {
    /// Kind: name, plural or short name.
    pub kind: String,
    pub name: String,
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// `trellis describe`: status and delivery of one resource.
pub async fn describe(args: DescribeArgs) -> anyhow::Result<()> {
    let kind: Kind = args.kind.parse().map_err(|e: String| anyhow::anyhow!(e))?;
    let url = format!("/api/v1/describe/{}/{}/{}", kind.as_str(), args.namespace, args.name);
    let response = args.server.client()?.get(&url).await?;
    if response.status != 200 {
        return Err(fail_with(&response));
    }
    let body: Value = serde_json::from_str(&response.body)?;
    let resource = &body["resource"];
    let status = &resource["status"];
    println!("Name:        {}", resource["metadata"]["name"].as_str().unwrap_or(""));
    println!(
        "Namespace:   {}",
        resource["metadata"]["namespace"].as_str().unwrap_or("")
    );
    println!("Kind:        {} ({})", kind, kind.api_version());
    println!("Generation:  {}", resource["metadata"]["generation"]);
    println!(
        "Status:      {} (observed generation {})",
        status["state"].as_str().unwrap_or("PENDING"),
        status["observedGeneration"]
    );
    if let Some(message) = status["message"].as_str().filter(|m| !m.is_empty()) {
        println!("Message:     {message}");
    }
    println!("Clusters:    {}", strings(&status["clusters"]));
    if status["workspaces"].is_array() {
        println!("Workspaces:  {}", strings(&status["workspaces"]));
    }
    let delivery = &body["delivery"];
    println!("Delivery:    {}", delivery["summary"].as_str().unwrap_or(""));
    for (cluster, state) in delivery["clusters"].as_object().into_iter().flatten() {
        let pending = strings(&state["pending"]);
        let pending = if pending.is_empty() {
            String::new()
        } else {
            format!(" (not yet: {pending})")
        };
        println!(
            "  {cluster}: {}/{} proxies{pending}",
            state["current"], state["proxies"]
        );
    }
    for rejection in delivery["rejected"].as_array().into_iter().flatten() {
        println!(
            "  REJECTED by {} in {}: {}",
            rejection["proxy"].as_str().unwrap_or(""),
            rejection["cluster"].as_str().unwrap_or(""),
            rejection["reason"].as_str().unwrap_or("")
        );
    }
    Ok(())
}

/// Files named by `-f`: a file, every `.yaml`/`.yml`/`.json` in a directory (sorted), or `-`.
pub fn expand_files(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        if path.as_os_str() == "-" || path.is_file() {
            files.push(path.clone());
        } else if path.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(path)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml" || e == "json"))
                .collect();
            found.sort();
            files.extend(found);
        } else {
            anyhow::bail!("{}: no such file or directory", path.display());
        }
    }
    Ok(files)
}
