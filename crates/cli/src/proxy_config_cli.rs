//! `trellis proxy-config <cluster> <proxy>`: a proxy's live Envoy config (its `/config_dump`),
//! read by the cluster's agent and relayed through the management server, so an operator needs
//! API rights (`get` on `trellis.io/proxyconfigs`), not a shell on the proxy's host.

use anyhow::Context;

use crate::api_client::ServerArgs;

#[derive(Debug, Clone, clap::Args)]
pub struct ProxyConfigArgs {
    /// The proxy's cluster.
    pub cluster: String,
    /// The proxy's id, as `trellis cluster list` or the UI's Proxies page shows it
    /// (`sidecar~frontend.demo`).
    pub proxy: String,
    /// Only one part of the dump: bootstrap, listeners, routes, clusters, secrets.
    #[arg(long, value_parser = ["bootstrap", "listeners", "routes", "clusters", "secrets", "scoped-routes"])]
    pub section: Option<String>,
    #[command(flatten)]
    pub server: ServerArgs,
}

pub async fn proxy_config(args: ProxyConfigArgs) -> anyhow::Result<()> {
    let path = format!(
        "/api/v1/clusters/{}/proxies/{}/config",
        crate::client::encode(&args.cluster),
        crate::client::encode(&args.proxy)
    );
    let response = args
        .server
        .client()?
        .get(&path)
        .await
        .context("cannot reach the management server API")?;
    if response.status != 200 {
        return Err(crate::client::fail_with(&response))
            .with_context(|| format!("proxy {} in {}", args.proxy, args.cluster));
    }
    let mut dump: serde_json::Value = serde_json::from_str(&response.body).context("the config dump is not JSON")?;
    if let Some(section) = &args.section {
        // Envoy names each part by its type, e.g. type.googleapis.com/envoy.admin.v3.ListenersConfigDump.
        let wanted = match section.as_str() {
            "scoped-routes" => "ScopedRoutesConfigDump".to_string(),
            other => format!("{}{}ConfigDump", other[..1].to_uppercase(), &other[1..]),
        };
        let part = dump["configs"]
            .as_array()
            .and_then(|configs| {
                configs
                    .iter()
                    .find(|c| c["@type"].as_str().is_some_and(|t| t.ends_with(&format!(".{wanted}"))))
            })
            .cloned()
            .with_context(|| format!("the dump has no {section} section"))?;
        dump = part;
    }
    println!("{}", serde_json::to_string_pretty(&dump)?);
    Ok(())
}
