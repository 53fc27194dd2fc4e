//! The golden cases' discovery (`testdata/discovery-demo.yaml`: backend v1 and a frontend in
//! cluster-1, backend v2 in cluster-2), for the tests that translate a config in it.

use std::collections::BTreeMap;

use trellis_model::{ClusterDiscovery, Snapshot};

use crate::{Translation, translate};

/// The demo's discovery, by cluster.
pub(crate) fn demo_discovery() -> BTreeMap<String, ClusterDiscovery> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/discovery-demo.yaml");
    let discovery: Vec<ClusterDiscovery> = yaml_serde::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    discovery.into_iter().map(|d| (d.cluster.clone(), d)).collect()
}

/// `config` (YAML documents read as `source`; blank: none) in the demo's clusters.
pub(crate) fn demo_snapshot(source: &str, config: &str) -> Snapshot {
    let resources = match config.trim() {
        "" => Vec::new(),
        text => trellis_api::parse_documents(source, text).unwrap(),
    };
    Snapshot::new(resources, demo_discovery())
}

/// `config` translated in the demo's clusters.
pub(crate) fn translated_in_demo(config: &str) -> Translation {
    translate(&demo_snapshot("test.yaml", config))
}
