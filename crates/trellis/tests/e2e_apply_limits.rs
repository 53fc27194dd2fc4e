//! What an attacker found the API accepted and every Envoy then NACKed (weights whose sum
//! overflows Envoy's uint32, a timeout beyond Envoy's range), and what it silently accepted
//! (duplicate keys, last one winning), against a real management server: each is refused with
//! 422 and the field path, and the store is unchanged afterwards. A registration TTL that would
//! overflow is refused too.

use trellis_testkit as common;

use common::*;

const GOOD: &str = "apiVersion: networking.gloo.solo.io/v2
kind: RouteTable
metadata: {name: backend, namespace: demo}
spec:
  hosts: [backend.mesh.internal]
  http:
  - forwardTo:
      destinations:
      - {ref: {name: backend-v1}, weight: 80}
      - {ref: {name: backend-v2}, weight: 20}
";

/// The attacker's RouteTable: each weight fits a uint32, their sum does not.
const HUGE_WEIGHTS: &str = "apiVersion: networking.gloo.solo.io/v2
kind: RouteTable
metadata: {name: backend, namespace: demo}
spec:
  hosts: [backend.mesh.internal]
  http:
  - forwardTo:
      destinations:
      - {ref: {name: backend-v1}, weight: 4294967295}
      - {ref: {name: backend-v2}, weight: 4294967295}
";

const HUGE_TIMEOUT: &str = "apiVersion: resilience.policy.gloo.solo.io/v2
kind: RetryTimeoutPolicy
metadata: {name: slow, namespace: demo}
spec:
  applyToRoutes: [{route: {labels: {route: backend}}}]
  config: {requestTimeout: 99999999999h}
";

/// A nested duplicate: which weight would win is exactly what must not be left to chance.
const DUPLICATE_KEY: &str = "apiVersion: networking.gloo.solo.io/v2
kind: RouteTable
metadata: {name: backend, namespace: demo}
spec:
  hosts: [backend.mesh.internal]
  http:
  - forwardTo:
      destinations:
      - ref: {name: backend-v1}
        weight: 0
        weight: 100
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_limits_and_duplicate_keys_are_refused_with_the_field_and_change_nothing() {
    let dir = test_dir("apply-limits");
    let _ = std::fs::remove_dir_all(&dir);
    let server = MgmtProcess::start(&dir, &[]).await;
    let api = server.api();

    let apply = |name: &'static str, content: &'static str| {
        let api = api.clone();
        async move {
            api.request(
                "POST",
                &format!("/api/v1/apply?source={name}"),
                Some(("application/yaml", content.as_bytes().to_vec())),
            )
            .await
            .unwrap()
        }
    };
    let response = apply("good.yaml", GOOD).await;
    assert_eq!(response.status, 200, "{}", response.body);
    let stored = stored_resources(&api).await;
    assert!(stored.contains("backend-v2"), "{stored}");

    // (file, content, what the 422 body must contain)
    let cases: [(&str, &str, &[&str]); 4] = [
        (
            "huge-weights.yaml",
            HUGE_WEIGHTS,
            &[
                "RouteTable/demo/backend",
                "spec.http[0].forwardTo.destinations",
                "add up to 8589934590",
            ],
        ),
        (
            "huge-timeout.yaml",
            HUGE_TIMEOUT,
            &[
                "RetryTimeoutPolicy/demo/slow",
                "spec.config.requestTimeout",
                "duration 99999999999h is too large: at most 9223372035.999999999s",
            ],
        ),
        (
            "duplicate-key.yaml",
            DUPLICATE_KEY,
            &[
                "RouteTable/demo/backend",
                "spec.http[0].forwardTo.destinations[0].weight",
                "duplicate key `weight`",
            ],
        ),
        (
            // Both in one apply: all or nothing, every error reported.
            "both.yaml",
            concat!(
                "apiVersion: networking.gloo.solo.io/v2\nkind: RouteTable\nmetadata: {name: other, namespace: demo}\nspec: {hosts: [other.mesh.internal], http: [{forwardTo: {destinations: [{ref: {name: a}}]}}]}\n---\n",
                "apiVersion: resilience.policy.gloo.solo.io/v2\nkind: RetryTimeoutPolicy\nmetadata: {name: slow, namespace: demo}\nspec:\n  config: {requestTimeout: 99999999999h}\n"
            ),
            &["\"document\":2", "spec.config.requestTimeout"],
        ),
    ];
    for (name, content, fragments) in cases {
        let response = apply(name, content).await;
        assert_eq!(response.status, 422, "{name}: {}", response.body);
        for fragment in fragments {
            assert!(
                response.body.contains(fragment),
                "{name}: wanted {fragment:?} in {}",
                response.body
            );
        }
        assert_eq!(stored_resources(&api).await, stored, "{name} changed the stored config");
    }

    // The same largest values Envoy accepts still apply.
    let response = apply(
        "max.yaml",
        "apiVersion: networking.gloo.solo.io/v2
kind: RouteTable
metadata: {name: backend, namespace: demo}
spec:
  hosts: [backend.mesh.internal]
  http:
  - forwardTo:
      destinations:
      - {ref: {name: backend-v1}, weight: 4294967294}
      - {ref: {name: backend-v2}, weight: 1}
",
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.body);

    // A registration TTL whose seconds overflow a u64 is refused, naming the limit.
    let (status, body) = server
        .post_json("/api/v1/clusters/cluster-1/register?ttl=99999999999999999h")
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.to_string()
            .contains("duration 99999999999999999h is too large: at most"),
        "{body}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
