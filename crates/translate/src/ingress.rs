//! VirtualGateway ─▶ ingress gateways: listeners (HTTP, or byte streams for `tcp` listeners and
//! TLS PASSTHROUGH), their TLS (files on the gateway's host, a Secret, or the mesh's own mTLS),
//! and the RouteTable routes bound to each gateway with `virtualGateways`.
//!
//! TLS modes as Gloo Mesh 2.x documents them for VirtualGateway listeners
//! (https://docs.solo.io/gloo-mesh-enterprise/latest/reference/api/virtual_gateway/): SIMPLE
//! terminates TLS, MUTUAL also requires a client certificate chained to `caCerts`, ISTIO_MUTUAL
//! requires a mesh client (the gateway presents its own mesh certificate), PASSTHROUGH forwards
//! the encrypted stream by SNI.
//!
//! An ISTIO_MUTUAL http listener is also an egress listener: it serves the ExternalServices
//! routed through its gateway (`egressGatewayRoutes`) that it exposes (see `egress`).

use trellis_api::{AllowedRouteTables, GatewayListener, GatewayTls, ObjectSelector};
use trellis_api::{Resource, Spec};
use trellis_model::Snapshot;
use trellis_model::ir::{IngressGateway, IngressListener, IngressTls, StreamListener, StreamRoute, TlsCredential};

use crate::egress::EgressRoute;

use crate::Warnings;
use crate::ingress_streams::{PendingStream, StreamKind, weighted_upstreams};
use crate::outbound::{Outbound, OutboundHost};
use crate::report::Report;
use crate::workspaces::Workspaces;

/// What gateways serve, resolved once for every cluster: RouteTable hosts bound to gateways,
/// their byte-stream routes, egress routes, and the workspaces listeners admit tables by.
pub(crate) struct GatewayRoutes<'a> {
    pub outbound: &'a Outbound,
    pub streams: &'a [PendingStream],
    pub egress_routes: &'a [EgressRoute],
    pub workspaces: &'a Workspaces,
}

pub(crate) fn for_cluster(
    snapshot: &Snapshot,
    routes: &GatewayRoutes<'_>,
    cluster: &str,
    report: &mut Report,
    warnings: &mut Warnings,
) -> Vec<IngressGateway> {
    let GatewayRoutes {
        outbound,
        streams,
        egress_routes,
        workspaces,
    } = *routes;
    let mut gateways = Vec::new();
    for resource in &snapshot.resources {
        let Spec::VirtualGateway(spec) = &resource.spec else {
            continue;
        };
        let key = resource.key().to_string();
        let name = format!("{}/{}", resource.metadata.namespace, resource.metadata.name);
        // The first workload selector names the gateway proxies; a cluster in it limits where.
        let selector = spec.workloads.first().map(|w| w.selector.clone()).unwrap_or_default();
        if !selector.cluster.is_empty() && selector.cluster != cluster {
            continue;
        }
        let mut hosts: Vec<_> = outbound
            .ingress
            .iter()
            .filter(|(gateway, _)| *gateway == name)
            .map(|(_, host)| host)
            .collect();
        hosts.sort_by(|a, b| a.name.cmp(&b.name));
        for (w, workload) in spec.workloads.iter().enumerate() {
            if workload.port.is_some() {
                warnings.add(
                    &key,
                    format!("spec.workloads[{w}].port: ignored; the gateway proxies listen on the listeners' ports"),
                );
            }
        }
        if spec.workloads.len() > 1 {
            warnings.add(
                &key,
                "spec.workloads[1..]: only the first workload selector picks the gateway proxies; the others are ignored",
            );
        }
        let own_streams: Vec<&PendingStream> = streams.iter().filter(|s| s.gateway == name).collect();
        let mut listeners = Vec::new();
        let mut serves_egress = false;
        for (l, listener) in spec.listeners.iter().enumerate() {
            let field = format!("spec.listeners[{l}]");
            let Ok(port) = u16::try_from(listener.port.number) else {
                continue;
            };
            let mut warn = |message: String| warnings.add(&key, format!("{field}.{message}"));
            let mode = listener.tls.as_ref().map(GatewayTls::effective_mode);
            if mode == Some("AUTO_PASSTHROUGH") {
                warn("tls.mode: AUTO_PASSTHROUGH is not supported; this listener is not served".to_string());
                continue;
            }
            if !listener.exposed_external_services.is_empty()
                && (mode != Some("ISTIO_MUTUAL") || listener.tcp.is_some())
            {
                warn(
                    "exposedExternalServices: an egress listener must be http with tls.mode ISTIO_MUTUAL (mesh \
                     clients only); this listener is not served"
                        .to_string(),
                );
                continue;
            }
            let egress = crate::egress::gateway_hosts(resource, listener, egress_routes, snapshot);
            if !listener.exposed_external_services.is_empty() && egress.is_empty() {
                warn(
                    "exposedExternalServices: no ExternalService routes through this gateway on this listener yet \
                     (egressGatewayRoutes.virtualGatewayRefs)"
                        .to_string(),
                );
            }
            serves_egress |= !egress.is_empty();
            let passthrough = mode == Some("PASSTHROUGH");
            let tls = match &listener.tls {
                Some(tls) if !passthrough => match listener_tls(snapshot, resource, tls) {
                    Ok(tls) => Some(tls),
                    Err(problem) => {
                        warn(format!("tls.{problem}; this listener is not served"));
                        continue;
                    }
                },
                _ => None,
            };
            let stream = (passthrough || listener.tcp.is_some()).then(|| StreamListener {
                passthrough,
                routes: stream_routes(outbound, &own_streams, port, passthrough),
            });
            if let Some(stream) = &stream
                && stream.routes.is_empty()
            {
                let list = if passthrough { "tls" } else { "tcp" };
                warn(format!(
                    "port: no `{list}` route of a RouteTable bound to this gateway serves this listener yet; it \
                     closes every connection"
                ));
            }
            // Redirecting makes sense only where the request arrived in plaintext.
            let https_redirect = listener.https_redirect == Some(true) && tls.is_none() && stream.is_none();
            listeners.push(IngressListener {
                port,
                https_redirect,
                tls,
                virtual_hosts: if stream.is_some() {
                    Vec::new()
                } else {
                    let mut all: Vec<_> = hosts
                        .iter()
                        .filter(|h| admits(listener, h, snapshot, workspaces))
                        .map(|h| h.to_ir(&outbound.targets))
                        .collect();
                    all.extend(egress.iter().map(|(host, _)| host.clone()));
                    all
                },
                stream,
                host_access: egress
                    .into_iter()
                    .map(|(_, access)| access)
                    .filter(|access| !access.policies.is_empty())
                    .collect(),
            });
        }
        warn_hosts_no_listener_admits(spec.listeners.as_slice(), &hosts, &name, snapshot, workspaces, warnings);
        if hosts.is_empty() && own_streams.is_empty() && !serves_egress {
            warnings.add(&key, "no RouteTable is bound to this gateway yet (virtualGateways)");
        }
        let entry = report.entry(&key);
        entry.applied += 1;
        entry.clusters.insert(cluster.to_string());
        gateways.push(IngressGateway {
            name,
            selector: selector.labels,
            listeners,
        });
    }
    gateways
}

/// Whether an HTTP listener serves a host a RouteTable bound to its gateway: any of its
/// `allowedRouteTables` entries admits the table and this host (none listed: every table).
fn admits(listener: &GatewayListener, host: &OutboundHost, snapshot: &Snapshot, workspaces: &Workspaces) -> bool {
    if listener.allowed_route_tables.is_empty() {
        return true;
    }
    let Some(table) = host
        .route_table
        .as_ref()
        .and_then(|(ns, name)| route_table(snapshot, ns, name))
    else {
        return true;
    };
    listener
        .allowed_route_tables
        .iter()
        .any(|entry| entry_admits(entry, &host.name, table, snapshot, workspaces))
}

fn route_table<'s>(snapshot: &'s Snapshot, namespace: &str, name: &str) -> Option<&'s Resource> {
    snapshot
        .resources
        .iter()
        .find(|r| matches!(r.spec, Spec::RouteTable(_)) && r.metadata.namespace == namespace && r.metadata.name == name)
}

fn entry_admits(
    entry: &AllowedRouteTables,
    host: &str,
    table: &Resource,
    snapshot: &Snapshot,
    workspaces: &Workspaces,
) -> bool {
    host_allowed(&entry.host, host)
        && entry
            .selector
            .as_ref()
            .is_none_or(|selector| table_selected(selector, table, snapshot, workspaces))
}

/// A listener's host pattern against a RouteTable host: exact, `*.` wildcard (any name under
/// the domain; the same wildcard in the table too), or `*` / none for every host.
pub(crate) fn host_allowed(pattern: &str, host: &str) -> bool {
    if pattern.is_empty() || pattern == "*" || pattern == host {
        return true;
    }
    pattern
        .strip_prefix("*.")
        .and_then(|domain| host.strip_suffix(domain))
        .is_some_and(|rest| rest.len() > 1 && rest.ends_with('.'))
}

/// The table's labels, name, namespace and workspace against the entry's selector. A RouteTable
/// is config, the same in every cluster: `cluster` is not checked against it.
fn table_selected(selector: &ObjectSelector, table: &Resource, snapshot: &Snapshot, workspaces: &Workspaces) -> bool {
    let meta = &table.metadata;
    selector.labels.iter().all(|(k, v)| meta.labels.get(k) == Some(v))
        && (selector.name.is_empty() || selector.name == meta.name)
        && (selector.namespace.is_empty() || selector.namespace == meta.namespace)
        && (selector.workspace.is_empty()
            || workspaces.of_config_namespace(snapshot, &meta.namespace) == Some(selector.workspace.as_str()))
}

/// A RouteTable host bound to the gateway that none of its HTTP listeners admits is not served:
/// the table's status says so.
fn warn_hosts_no_listener_admits(
    listeners: &[GatewayListener],
    hosts: &[&OutboundHost],
    gateway: &str,
    snapshot: &Snapshot,
    workspaces: &Workspaces,
    warnings: &mut Warnings,
) {
    let http: Vec<&GatewayListener> = listeners
        .iter()
        .filter(|l| l.tcp.is_none() && l.tls.as_ref().is_none_or(|t| t.effective_mode() != "PASSTHROUGH"))
        .collect();
    if http.is_empty() {
        return;
    }
    for host in hosts {
        if http.iter().any(|l| admits(l, host, snapshot, workspaces)) {
            continue;
        }
        if let Some((namespace, name)) = &host.route_table {
            warnings.add(
                format!("RouteTable/{namespace}/{name}"),
                format!(
                    "spec.hosts: {} is allowed on no listener of VirtualGateway {gateway} (allowedRouteTables); \
                     that gateway does not serve it",
                    host.name
                ),
            );
        }
    }
}

/// The stream routes a listener serves: `tls` routes on a PASSTHROUGH listener, `tcp` routes
/// on a `tcp` one, each only if its matchers name this port or no port at all.
fn stream_routes(outbound: &Outbound, streams: &[&PendingStream], port: u16, passthrough: bool) -> Vec<StreamRoute> {
    let kind = if passthrough { StreamKind::Tls } else { StreamKind::Tcp };
    streams
        .iter()
        .filter(|s| s.kind == kind && (s.ports.is_empty() || s.ports.contains(&port)))
        .map(|s| StreamRoute {
            name: s.name.clone(),
            server_names: s.server_names.clone(),
            destinations: weighted_upstreams(outbound, &s.destinations),
        })
        .collect()
}

/// A terminating listener's TLS, or the problem (a field path under `tls` and what is wrong).
fn listener_tls(snapshot: &Snapshot, gateway: &Resource, tls: &GatewayTls) -> Result<IngressTls, String> {
    let checked = terminated_tls(snapshot, gateway, tls)?;
    let verifies_clients = checked.mesh_mutual
        || checked.client_ca_file.is_some()
        || checked.credential.as_ref().is_some_and(|c| c.client_ca_pem.is_some());
    if !tls.verify_subject_alt_name.is_empty() && !verifies_clients {
        return Err(
            "verifySubjectAltName: needs MUTUAL or ISTIO_MUTUAL, where clients present certificates".to_string(),
        );
    }
    Ok(IngressTls {
        client_subject_alt_names: tls.verify_subject_alt_name.clone(),
        ..checked
    })
}

fn terminated_tls(snapshot: &Snapshot, gateway: &Resource, tls: &GatewayTls) -> Result<IngressTls, String> {
    let mutual = tls.effective_mode() == "MUTUAL";
    if tls.effective_mode() == "ISTIO_MUTUAL" {
        return Ok(IngressTls {
            mesh_mutual: true,
            ..Default::default()
        });
    }
    if let Some(files) = &tls.files {
        return Ok(IngressTls {
            cert_chain_file: files.server_cert.clone(),
            private_key_file: files.private_key.clone(),
            client_ca_file: if mutual { files.ca_certs.clone() } else { None },
            ..Default::default()
        });
    }
    let name = tls.secret_name.as_deref().unwrap_or_default();
    let credential = secret_credential(snapshot, &gateway.metadata.namespace, name, mutual)
        .map_err(|problem| format!("secretName: {problem}"))?;
    Ok(IngressTls {
        credential: Some(credential),
        ..Default::default()
    })
}

/// The PEM values of Secret `namespace/name`, by the first of the keys given that holds one.
pub(crate) fn secret_pem<'a>(
    snapshot: &'a Snapshot,
    namespace: &str,
    name: &str,
) -> Result<impl Fn([&str; 2]) -> Option<String> + 'a, String> {
    let secret = snapshot
        .resources
        .iter()
        .find_map(|r| match &r.spec {
            Spec::Secret(secret) if r.metadata.namespace == namespace && r.metadata.name == name => Some(secret),
            _ => None,
        })
        .ok_or_else(|| format!("Secret {namespace}/{name} does not exist"))?;
    Ok(move |keys: [&str; 2]| {
        keys.iter()
            .find_map(|k| secret.value(k))
            .filter(|v| v.contains("-----BEGIN"))
    })
}

/// A Kubernetes TLS Secret of the gateway's own namespace: `tls.crt` and `tls.key`, and for
/// MUTUAL `ca.crt` (Istio's `cert`, `key` and `cacert` are read too). A gateway reads no other
/// namespace's Secrets: whoever may write VirtualGateways in one namespace must not be able to
/// serve another team's certificate.
pub(crate) fn secret_credential(
    snapshot: &Snapshot,
    namespace: &str,
    name: &str,
    mutual: bool,
) -> Result<TlsCredential, String> {
    let pick = secret_pem(snapshot, namespace, name)?;
    let cert = pick(["tls.crt", "cert"]).ok_or_else(|| format!("Secret {namespace}/{name} has no PEM tls.crt"))?;
    let key = pick(["tls.key", "key"]).ok_or_else(|| format!("Secret {namespace}/{name} has no PEM tls.key"))?;
    let ca = pick(["ca.crt", "cacert"]);
    if mutual && ca.is_none() {
        return Err(format!(
            "Secret {namespace}/{name} has no PEM ca.crt, which MUTUAL needs for client certificates"
        ));
    }
    Ok(TlsCredential {
        secret: format!("{namespace}/{name}"),
        cert_chain_pem: cert,
        private_key_pem: key,
        client_ca_pem: if mutual { ca } else { None },
    })
}
