//! Set-up and requests shared by the add-on tests: the demo mesh with its add-ons, the README's
//! add-on example (API key and a per-user rate limit on api.mesh.internal), and requests to it.

use std::time::Duration;

use trellis_cli::up::{LocalMesh, MeshOptions};

/// [`super::demo_mesh`] with the add-ons (ext-auth, redis, rate limiter) running in each cluster.
pub async fn demo_mesh_with_addons(name: &str) -> LocalMesh {
    let mut options = MeshOptions::free();
    options.addons = true;
    super::demo_mesh_with(name, options).await
}

/// Applies examples/addons/api-key-and-rate-limit.yaml, as the README does.
pub async fn apply_addons_example(mesh: &LocalMesh) {
    let example = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/addons/api-key-and-rate-limit.yaml"),
    )
    .unwrap();
    let response = mesh.apply("api-key-and-rate-limit.yaml", &example).await.unwrap();
    assert_eq!(response.status, 200, "{}", response.body);
}

/// A GET of http://api.mesh.internal/ through the frontend's sidecar, as the app would call.
pub async fn api_via_frontend(mesh: &LocalMesh, headers: &[(&str, &str)]) -> trellis_support::httpc::Response {
    let proxy = format!("127.0.0.1:{}", mesh.app("frontend").outbound_port);
    trellis_support::httpc::request(
        "GET",
        "http://api.mesh.internal/",
        Some(&proxy),
        headers,
        None,
        Duration::from_secs(5),
    )
    .await
    .unwrap()
}

/// The add-on example's API key header, when there is a key.
pub fn api_key_header(key: Option<&str>) -> Vec<(&str, &str)> {
    key.map(|k| ("x-api-key", k)).into_iter().collect()
}
