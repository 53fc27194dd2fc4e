//! The bootstrap file an Envoy starts from: who it is, where its admin listens, and how to
//! reach the xDS server over ADS. Everything else arrives over that one stream.
//!
//! Written as JSON (not protobuf) because it is a file people read when a proxy misbehaves.

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
                "api_type": "GRPC",
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
                "type": "STATIC",
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

/// [`bootstrap`] for an xDS server that checks who asks: Envoy sends `authorization: Bearer
/// <token>` as gRPC metadata on its ADS stream, so the server hands this node's resources (its
/// private key among them) only to the holder of the node's registration credential. The file
/// then holds a secret: write it owner-only. Envoy does not redact `initial_metadata` in its
/// admin `/config_dump`, so whoever reaches the admin listener can read the token too.
pub fn bootstrap_with_token(spec: &BootstrapSpec, token: &str) -> Value {
    let mut bootstrap = bootstrap(spec);
    bootstrap["dynamic_resources"]["ads_config"]["grpc_services"][0]["initial_metadata"] =
        json!([{ "key": "authorization", "value": format!("Bearer {token}") }]);
    bootstrap
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
    fn the_token_goes_to_the_ads_stream_as_bearer_metadata() {
        let b = bootstrap_with_token(&mk_spec(), "t0ken");
        let service = &b["dynamic_resources"]["ads_config"]["grpc_services"][0];
        assert_eq!(service["envoy_grpc"]["cluster_name"], XDS_CLUSTER);
        assert_eq!(
            service["initial_metadata"],
            json!([{ "key": "authorization", "value": "Bearer t0ken" }])
        );
        assert!(bootstrap(&mk_spec()).to_string().find("initial_metadata").is_none());
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
}
