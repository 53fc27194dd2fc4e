//! VirtualGateway ─▶ ingress gateways: listeners (with TLS from files on the gateway's host) and
//! the RouteTable routes bound to each gateway with `virtualGateways`.

use trellis_api::Spec;
use trellis_model::Snapshot;
use trellis_model::ir::{IngressGateway, IngressListener, IngressTls};

use crate::Warnings;
use crate::outbound::Outbound;
use crate::report::Report;

pub(crate) fn for_cluster(
    snapshot: &Snapshot,
    outbound: &Outbound,
    cluster: &str,
    report: &mut Report,
    warnings: &mut Warnings,
) -> Vec<IngressGateway> {
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
        let listeners = spec
            .listeners
            .iter()
            .filter_map(|listener| {
                let port = u16::try_from(listener.port.number).ok()?;
                let tls = listener.tls.as_ref().and_then(|tls| {
                    let files = tls.files.as_ref()?;
                    Some(IngressTls {
                        cert_chain_file: files.cert_chain.clone(),
                        private_key_file: files.private_key.clone(),
                        client_ca_file: (tls.mode == "MUTUAL").then(|| files.root_ca.clone()).flatten(),
                    })
                });
                Some(IngressListener {
                    port,
                    tls,
                    virtual_hosts: hosts.iter().map(|h| h.to_ir(&outbound.targets)).collect(),
                })
            })
            .collect::<Vec<_>>();
        if hosts.is_empty() {
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
