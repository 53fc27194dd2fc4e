//! Packing resources as `Any` for DiscoveryResponses, paired with their type URL and name so the
//! xDS server can index, version and filter them without knowing Envoy's message types.

use envoy_types::pb::google::protobuf::Any;
use envoy_types::util::pack_any;

use crate::ProxyResources;

pub const CLUSTER_TYPE: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub const ENDPOINT_TYPE: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
pub const LISTENER_TYPE: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
pub const ROUTE_TYPE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
pub const SECRET_TYPE: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

impl ProxyResources {
    /// Every resource as `(type_url, name, Any)`: clusters, endpoints, listeners, routes, secrets,
    /// each in generation order (the order Envoy subscribes in).
    pub fn into_typed(self) -> Vec<(&'static str, String, Any)> {
        let clusters = self
            .clusters
            .into_iter()
            .map(|c| (CLUSTER_TYPE, c.name.clone(), pack_any(c)));
        let endpoints = self
            .endpoints
            .into_iter()
            .map(|e| (ENDPOINT_TYPE, e.cluster_name.clone(), pack_any(e)));
        let listeners = self
            .listeners
            .into_iter()
            .map(|l| (LISTENER_TYPE, l.name.clone(), pack_any(l)));
        let routes = self
            .routes
            .into_iter()
            .map(|r| (ROUTE_TYPE, r.name.clone(), pack_any(r)));
        let secrets = self
            .secrets
            .into_iter()
            .map(|s| (SECRET_TYPE, s.name.clone(), pack_any(s)));
        clusters
            .chain(endpoints)
            .chain(listeners)
            .chain(routes)
            .chain(secrets)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
    use envoy_types::pb::envoy::config::listener::v3::Listener;
    use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
    use prost::Name;

    #[test]
    fn type_constants_match_the_proto_type_urls() {
        assert_eq!(CLUSTER_TYPE, Cluster::type_url());
        assert_eq!(ENDPOINT_TYPE, ClusterLoadAssignment::type_url());
        assert_eq!(LISTENER_TYPE, Listener::type_url());
        assert_eq!(ROUTE_TYPE, RouteConfiguration::type_url());
        assert_eq!(SECRET_TYPE, Secret::type_url());
    }

    #[test]
    fn into_typed_names_each_resource_and_keeps_type_order() {
        let resources = ProxyResources {
            clusters: vec![Cluster {
                name: "c".into(),
                ..Default::default()
            }],
            endpoints: vec![ClusterLoadAssignment {
                cluster_name: "c".into(),
                ..Default::default()
            }],
            listeners: vec![Listener {
                name: "l".into(),
                ..Default::default()
            }],
            routes: vec![RouteConfiguration {
                name: "r".into(),
                ..Default::default()
            }],
            secrets: vec![Secret {
                name: "s".into(),
                ..Default::default()
            }],
        };
        let typed: Vec<_> = resources
            .into_typed()
            .into_iter()
            .map(|(t, name, any)| {
                assert_eq!(t, any.type_url);
                (t, name)
            })
            .collect();
        assert_eq!(
            typed,
            vec![
                (CLUSTER_TYPE, "c".to_string()),
                (ENDPOINT_TYPE, "c".to_string()),
                (LISTENER_TYPE, "l".to_string()),
                (ROUTE_TYPE, "r".to_string()),
                (SECRET_TYPE, "s".to_string()),
            ]
        );
    }
}
