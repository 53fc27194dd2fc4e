//! The bootstrap file an Envoy starts from: who it is, where its admin listens, and how to
//! reach the xDS server over ADS. Everything else arrives over that one stream.
//!
//! Written as JSON (not protobuf) because it is a file people read when a proxy misbehaves.
//!
//! Whatever the bootstrap holds, Envoy's admin `/config_dump` shows to anyone who reaches the
//! admin port, so it holds no secret: the ADS stream is authenticated by a TLS client
//! certificate whose key Envoy reads from a file ([`bootstrap_with_client_certificate`]).

use serde_json::{Value, json};

/// Name of the static cluster that leads to the xDS server.
pub const XDS_CLUSTER: &str = "xds_cluster";

/// Identity and addresses of one Envoy.
#[derive(Debug, Clone, Copy)]
pub struct BootstrapSpec<'a> {
    /// The proxy's identity in every xDS request (`node.id`).
    pub node_id: &'a str,
    pub node_cluster: &'a str,
    pub admin_address: &'a str,
    pub admin_port: u16,
    /// Must be an IP address: the xDS cluster is STATIC.
    pub xds_address: &'a str,
    pub xds_port: u16,
}

/// The content of a bootstrap file for `envoy -c bootstrap.json`.
pub fn bootstrap(spec: &BootstrapSpec) -> Value {
    let ads = json!({ "ads": {}, "resource_api_version": "V3" });
    json!({
        "node": { "id": spec.node_id, "cluster": spec.node_cluster },
        "admin": { "address": socket_address(spec.admin_address, spec.admin_port) },
        "dynamic_resources": {
            "ads_config": {
                // Delta xDS: a change moves the resources it touched, not whole types.
                "api_type": "DELTA_GRPC",
                "transport_api_version": "V3",
                "set_node_on_first_message_only": true,
                "grpc_services": [{ "envoy_grpc": { "cluster_name": XDS_CLUSTER } }]
            },
            "cds_config": ads.clone(),
            "lds_config": ads
        },
        "static_resources": {
            "clusters": [{
                "name": XDS_CLUSTER,
                // A name (the agent's Service, in Kubernetes) is resolved; an address is used as is.
                "type": if spec.xds_address.parse::<std::net::IpAddr>().is_ok() { "STATIC" } else { "STRICT_DNS" },
                // A name with both families (`localhost`) goes to IPv4 first, as agents listen
                // on 0.0.0.0; an IPv6-only name still resolves.
                "dns_lookup_family": "V4_PREFERRED",
                "connect_timeout": "1s",
                // gRPC needs HTTP/2 to the xDS server.
                "typed_extension_protocol_options": {
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                        "explicit_http_config": { "http2_protocol_options": {} }
                    }
                },
                "load_assignment": {
                    "cluster_name": XDS_CLUSTER,
                    "endpoints": [{ "lb_endpoints": [{ "endpoint": {
                        "address": socket_address(spec.xds_address, spec.xds_port)
                    } }] }]
                }
            }]
        }
    })
}

/// SDS name of the xDS client certificate (the secret [`xds_client_certificate_secret`] holds).
pub const XDS_CLIENT_SECRET: &str = "xds_client_certificate";
/// SDS name of the xDS server's trust anchor and name ([`xds_server_validation_secret`]).
pub const XDS_SERVER_SECRET: &str = "xds_server_validation";

/// Where an Envoy finds the TLS material of its ADS connection: two SDS files (JSON) in a
/// directory that Envoy watches, so that replacing a file by rename (a renewed certificate, a
/// new agent CA) takes effect without restarting Envoy.
#[derive(Debug, Clone, Copy)]
pub struct XdsTls<'a> {
    /// The watched directory; absolute, like the paths below (Envoy resolves relative paths
    /// against its working directory).
    pub dir: &'a str,
    /// Holds [`xds_client_certificate_secret`].
    pub client_secret_file: &'a str,
    /// Holds [`xds_server_validation_secret`].
    pub server_secret_file: &'a str,
    /// The name the xDS server's certificate must carry (sent as SNI, matched as a DNS SAN).
    pub server_name: &'a str,
}

/// [`bootstrap`] whose ADS connection is mutual TLS: Envoy presents a client certificate for
/// its node and checks the server's. The certificate and key come over file-based SDS, and
/// name files rather than contents, so `/config_dump` shows the bootstrap with file paths and
/// the loaded secret with its key `[redacted]`: nothing there opens an ADS stream as this node.
pub fn bootstrap_with_client_certificate(spec: &BootstrapSpec, tls: &XdsTls) -> Value {
    let mut bootstrap = bootstrap(spec);
    let sds = |file: &str| {
        json!({
            "path_config_source": { "path": file, "watched_directory": { "path": tls.dir } },
            "resource_api_version": "V3"
        })
    };
    bootstrap["static_resources"]["clusters"][0]["transport_socket"] = json!({
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "sni": tls.server_name,
            "common_tls_context": {
                "tls_certificate_sds_secret_configs": [
                    { "name": XDS_CLIENT_SECRET, "sds_config": sds(tls.client_secret_file) }
                ],
                "validation_context_sds_secret_config": {
                    "name": XDS_SERVER_SECRET, "sds_config": sds(tls.server_secret_file)
                }
            }
        }
    });
    bootstrap
}

/// The SDS file of the xDS client certificate: chain and key by file name (the key file owner-only).
pub fn xds_client_certificate_secret(cert_file: &str, key_file: &str) -> Value {
    sds_file(json!({
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
        "name": XDS_CLIENT_SECRET,
        "tls_certificate": {
            "certificate_chain": { "filename": cert_file },
            "private_key": { "filename": key_file }
        }
    }))
}

/// The SDS file of the xDS server check: the agent's CA (by file name) and the server's name.
pub fn xds_server_validation_secret(ca_file: &str, server_name: &str) -> Value {
    sds_file(json!({
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
        "name": XDS_SERVER_SECRET,
        "validation_context": {
            "trusted_ca": { "filename": ca_file },
            "match_typed_subject_alt_names": [
                { "san_type": "DNS", "matcher": { "exact": server_name } }
            ]
        }
    }))
}

fn sds_file(secret: Value) -> Value {
    json!({ "resources": [secret] })
}

fn socket_address(address: &str, port: u16) -> Value {
    json!({ "socket_address": { "address": address, "port_value": port } })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_spec() -> BootstrapSpec<'static> {
        BootstrapSpec {
            node_id: "sidecar~default/reviews-1",
            node_cluster: "east",
            admin_address: "127.0.0.1",
            admin_port: 15000,
            xds_address: "10.0.0.9",
            xds_port: 15010,
        }
    }

    #[test]
    fn bootstrap_names_the_node_and_points_ads_at_the_xds_cluster() {
        let b = bootstrap(&mk_spec());
        assert_eq!(b["node"]["id"], "sidecar~default/reviews-1");
        assert_eq!(b["node"]["cluster"], "east");
        assert_eq!(b["admin"]["address"]["socket_address"]["port_value"], 15000);
        let ads = &b["dynamic_resources"]["ads_config"];
        assert_eq!(ads["grpc_services"][0]["envoy_grpc"]["cluster_name"], XDS_CLUSTER);
        assert_eq!(ads["set_node_on_first_message_only"], true);
        assert_eq!(b["dynamic_resources"]["cds_config"]["resource_api_version"], "V3");
        assert_eq!(b["dynamic_resources"]["lds_config"]["ads"], json!({}));
    }

    #[test]
    fn the_ads_connection_is_mutual_tls_from_watched_sds_files_and_carries_no_secret() {
        let tls = XdsTls {
            dir: "/p/xds-tls",
            client_secret_file: "/p/xds-tls/client-secret.json",
            server_secret_file: "/p/xds-tls/server-secret.json",
            server_name: "xds.trellis-agent",
        };
        let b = bootstrap_with_client_certificate(&mk_spec(), &tls);
        let socket = &b["static_resources"]["clusters"][0]["transport_socket"];
        assert_eq!(socket["name"], "envoy.transport_sockets.tls");
        let context = &socket["typed_config"];
        assert_eq!(context["sni"], "xds.trellis-agent");
        let client = &context["common_tls_context"]["tls_certificate_sds_secret_configs"][0];
        assert_eq!(client["name"], XDS_CLIENT_SECRET);
        let source = &client["sds_config"]["path_config_source"];
        assert_eq!(source["path"], "/p/xds-tls/client-secret.json");
        assert_eq!(source["watched_directory"]["path"], "/p/xds-tls");
        let server = &context["common_tls_context"]["validation_context_sds_secret_config"];
        assert_eq!(server["name"], XDS_SERVER_SECRET);
        assert_eq!(
            server["sds_config"]["path_config_source"]["path"],
            "/p/xds-tls/server-secret.json"
        );
        // No token, no metadata, no inline key material.
        let text = b.to_string();
        for absent in ["initial_metadata", "inline_", "PRIVATE KEY", "authorization"] {
            assert!(!text.contains(absent), "{absent} in {text}");
        }
    }

    #[test]
    fn the_sds_files_name_files_and_check_the_server_name() {
        let client = xds_client_certificate_secret("/p/client.pem", "/p/client.key");
        let secret = &client["resources"][0];
        assert_eq!(secret["name"], XDS_CLIENT_SECRET);
        assert_eq!(
            secret["tls_certificate"]["private_key"],
            json!({ "filename": "/p/client.key" })
        );
        assert_eq!(
            secret["tls_certificate"]["certificate_chain"],
            json!({ "filename": "/p/client.pem" })
        );
        let server = xds_server_validation_secret("/p/ca.pem", "xds.trellis-agent");
        let context = &server["resources"][0]["validation_context"];
        assert_eq!(context["trusted_ca"], json!({ "filename": "/p/ca.pem" }));
        assert_eq!(
            context["match_typed_subject_alt_names"],
            json!([{ "san_type": "DNS", "matcher": { "exact": "xds.trellis-agent" } }])
        );
    }

    #[test]
    fn xds_cluster_is_static_http2_to_the_xds_address() {
        let b = bootstrap(&mk_spec());
        let cluster = &b["static_resources"]["clusters"][0];
        assert_eq!(cluster["name"], XDS_CLUSTER);
        assert_eq!(cluster["type"], "STATIC");
        let options =
            &cluster["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"];
        assert_eq!(options["explicit_http_config"]["http2_protocol_options"], json!({}));
        let address =
            &cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"];
        assert_eq!(address["address"], "10.0.0.9");
        assert_eq!(address["port_value"], 15010);
    }

    #[test]
    fn an_xds_server_known_by_name_is_resolved() {
        let mut spec = mk_spec();
        spec.xds_address = "trellis-agent.trellis.svc.cluster.local";
        assert_eq!(
            bootstrap(&spec)["static_resources"]["clusters"][0]["type"],
            "STRICT_DNS"
        );
    }
}
