//! Gloo's resilience and traffic-control guide examples, applied unchanged to the bookinfo mesh
//! (real Envoy), each checked for what its guide says it does.

use std::time::{Duration, Instant};

use trellis_gloo_conformance::bookinfo::{Bookinfo, RATINGS_ROUTE_TABLE, Request, service_url};

/// timeout.yaml: "Requests on routes labelled route: ratings time out after 2s."
/// Ratings answering 3 s late gets 504 after about 2 s; answering at once, 200; and the route
/// table alone (the policy deleted) waits the 3 s out.
#[tokio::test(flavor = "multi_thread")]
async fn timeout_cuts_slow_ratings_at_two_seconds() {
    let bookinfo = Bookinfo::start("gloo-timeout").await;
    bookinfo.apply("ratings-rt.yaml", RATINGS_ROUTE_TABLE).await;
    bookinfo.apply_example("timeout.yaml").await;
    let url = format!("{}/ratings/1", service_url("ratings"));
    bookinfo.chaos("ratings", "delay-ms/3000").await;
    bookinfo
        .until(
            "a slow ratings times out with 504 in 2 s",
            Duration::from_secs(30),
            || async {
                let started = Instant::now();
                let answer = bookinfo.call("productpage", Request::get(&url)).await;
                let took = started.elapsed();
                answer.status == 504 && took >= Duration::from_millis(1900) && took < Duration::from_millis(2900)
            },
        )
        .await;
    bookinfo.chaos("ratings", "delay-ms/0").await;
    assert_eq!(bookinfo.call("productpage", Request::get(&url)).await.status, 200);

    bookinfo.chaos("ratings", "delay-ms/3000").await;
    bookinfo.delete_example("timeout.yaml").await;
    bookinfo
        .until(
            "without the policy the slow answer arrives",
            Duration::from_secs(30),
            || async { bookinfo.call("productpage", Request::get(&url)).await.status == 200 },
        )
        .await;
    bookinfo.finish().await;
}
