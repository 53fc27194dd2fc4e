//! Gloo's resilience and traffic-control guide examples, applied unchanged to the bookinfo mesh
//! (real Envoy), each checked for what its guide says it does.

use std::time::{Duration, Instant};

use trellis_cli::up::MeshOptions;
use trellis_gloo_conformance::bookinfo::{Answer, Bookinfo, RATINGS_ROUTE_TABLE, Request, service_url};

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

/// Gloo's failover and outlier-detection guides' prerequisite: one VirtualDestination for
/// reviews across both clusters (`reviews.global`), the destination the policies select with
/// `kind: VIRTUAL_DESTINATION`. Shape from
/// https://docs.solo.io/gloo-mesh-enterprise/2.5.x//reference/api/virtual_destination (the
/// failover guide's reviews virtual destination:
/// https://docs.solo.io/gloo-mesh-enterprise/main/reference/api/failover_policy/).
const REVIEWS_VIRTUAL_DESTINATION: &str = "\
apiVersion: networking.gloo.solo.io/v2
kind: VirtualDestination
metadata:
  name: reviews-global
  namespace: bookinfo
spec:
  hosts:
  - reviews.global
  services:
  - namespace: bookinfo
    labels:
      app: reviews
  ports:
  - number: 9080
    protocol: HTTP
    targetPort:
      number: 9080
";

const REVIEWS_GLOBAL: &str = "http://reviews.global:9080/";

/// The HTTP buffer guide's prerequisite: a route table for productpage whose route is labelled
/// `route: productpage`, for every client in the mesh (the guides' route-table shape, as
/// `RATINGS_ROUTE_TABLE`; https://docs.solo.io/gloo-mesh-enterprise/main/reference/api/http_buffer_policy/).
const PRODUCTPAGE_ROUTE_TABLE: &str = "\
apiVersion: networking.gloo.solo.io/v2
kind: RouteTable
metadata:
  name: productpage-rt
  namespace: bookinfo
spec:
  hosts:
  - productpage.bookinfo.svc.cluster.local
  workloadSelectors:
  - {}
  http:
  - name: productpage
    labels:
      route: productpage
    forwardTo:
      destinations:
      - ref:
          name: productpage
          namespace: bookinfo
          cluster: cluster-1
        port:
          number: 9080
";

/// Bounds that hold `n` Bernoulli(`p`) trials' count with 5 standard deviations to spare: a
/// correct system misses them about once in 3.5 million runs.
fn binomial_band(n: usize, p: f64) -> std::ops::RangeInclusive<usize> {
    let mean = n as f64 * p;
    let spread = 5.0 * (n as f64 * p * (1.0 - p)).sqrt();
    ((mean - spread).max(0.0).floor() as usize)..=((mean + spread).ceil() as usize)
}

/// `n` GET requests to `url` through `app`'s sidecar at once; each answer's status (0: none)
/// with how long it took.
async fn concurrently(bookinfo: &Bookinfo, app: &str, url: &str, n: usize) -> Vec<(u16, Duration)> {
    let proxy = format!("127.0.0.1:{}", bookinfo.mesh.app(app).outbound_port);
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (proxy, url) = (proxy.clone(), url.to_string());
        calls.spawn(async move {
            let started = Instant::now();
            let answer =
                trellis_support::httpc::request("GET", &url, Some(&proxy), &[], None, Duration::from_secs(20)).await;
            (answer.map(|a| a.status).unwrap_or(0), started.elapsed())
        });
    }
    calls.join_all().await
}

/// Answers from `n` GETs of `url` from `app`, one after the other.
async fn sequence(bookinfo: &Bookinfo, app: &str, url: &str, n: usize) -> Vec<Answer> {
    let mut answers = Vec::with_capacity(n);
    for _ in 0..n {
        answers.push(bookinfo.call(app, Request::get(url)).await);
    }
    answers
}

/// How many answers name the same version as the one before: 0 under round robin over equal
/// backends, about half of them under random choice between two.
fn repeats(answers: &[Answer]) -> usize {
    answers
        .windows(2)
        .filter(|pair| pair[0].field("version") == pair[1].field("version"))
        .count()
}

/// fault-injection-delay.yaml: "Every request on routes labelled route: ratings is delayed by
/// 5s (percentage defaults to 100)." fault-injection-abort-and-delay.yaml: "40% of requests are
/// delayed 5s and, independently, 10% are answered 418; the delay comes first."
#[tokio::test(flavor = "multi_thread")]
async fn fault_injection_delays_and_aborts_ratings_requests() {
    let bookinfo = Bookinfo::start("gloo-faults").await;
    bookinfo.apply("ratings-rt.yaml", RATINGS_ROUTE_TABLE).await;
    let url = format!("{}/ratings/1", service_url("ratings"));
    let details = format!("{}/details/1", service_url("details"));

    bookinfo.apply_example("fault-injection-delay.yaml").await;
    bookinfo
        .until("every ratings request waits 5 s", Duration::from_secs(40), || async {
            let answers = concurrently(&bookinfo, "productpage", &url, 5).await;
            answers.iter().all(|(status, took)| {
                *status == 200 && *took >= Duration::from_millis(4900) && *took < Duration::from_secs(7)
            })
        })
        .await;
    // Details is on no labelled route: not delayed.
    let started = Instant::now();
    assert_eq!(bookinfo.call("productpage", Request::get(&details)).await.status, 200);
    assert!(started.elapsed() < Duration::from_secs(2), "details was delayed");
    bookinfo.delete_example("fault-injection-delay.yaml").await;

    bookinfo.apply_example("fault-injection-abort-and-delay.yaml").await;
    bookinfo
        .until(
            "some ratings requests are aborted with 418",
            Duration::from_secs(40),
            || async {
                concurrently(&bookinfo, "productpage", &url, 40)
                    .await
                    .iter()
                    .any(|(status, _)| *status == 418)
            },
        )
        .await;
    let n = 200;
    let answers = concurrently(&bookinfo, "productpage", &url, n).await;
    let delayed = |took: &Duration| *took >= Duration::from_millis(4900);
    let aborted = answers.iter().filter(|(status, _)| *status == 418).count();
    let late = answers.iter().filter(|(_, took)| delayed(took)).count();
    let others: Vec<u16> = answers
        .iter()
        .map(|(status, _)| *status)
        .filter(|s| *s != 200 && *s != 418)
        .collect();
    assert!(others.is_empty(), "only 200 and 418 expected, got {others:?}");
    assert!(
        binomial_band(n, 0.4).contains(&late),
        "{late} of {n} delayed, 40% expected"
    );
    // Never aborting at all would be a (1 - 0.1)^200 < 1e-9 chance.
    let band = binomial_band(n, 0.1);
    assert!(
        aborted >= 1 && aborted <= *band.end(),
        "{aborted} of {n} aborted, 10% expected"
    );
    // The delay comes first and is independent: some aborted requests were delayed too (all
    // 418s quick is a 0.6^aborted chance, below 1e-4 from 18 aborts on).
    if aborted >= 18 {
        assert!(
            answers.iter().any(|(status, took)| *status == 418 && delayed(took)),
            "no aborted request was delayed"
        );
    }
    bookinfo.delete_example("fault-injection-abort-and-delay.yaml").await;
    bookinfo
        .until(
            "without the policy ratings answers 200 at once",
            Duration::from_secs(30),
            || async {
                concurrently(&bookinfo, "productpage", &url, 40)
                    .await
                    .iter()
                    .all(|(status, took)| *status == 200 && *took < Duration::from_secs(2))
            },
        )
        .await;
    bookinfo.finish().await;
}

/// header-manipulation.yaml: "Routes labelled route: ratings get a request header added and the
/// response header x-envoy-upstream-service-time removed." mirror.yaml: "A copy of the requests
/// on routes labelled route: ratings is sent to the reviews service in cluster-2; its responses
/// are dropped." http-buffer.yaml: "Requests on routes labelled route: productpage are buffered
/// up to 16384 bytes; larger bodies are answered 413."
#[tokio::test(flavor = "multi_thread")]
async fn header_manipulation_mirror_and_buffer_limits_on_labelled_routes() {
    let bookinfo = Bookinfo::start("gloo-traffic").await;
    bookinfo.apply("ratings-rt.yaml", RATINGS_ROUTE_TABLE).await;
    let url = format!("{}/ratings/1", service_url("ratings"));
    let details = format!("{}/details/1", service_url("details"));

    // Header manipulation.
    bookinfo.apply_example("header-manipulation.yaml").await;
    bookinfo
        .until(
            "ratings gets x-custom-header and answers without x-envoy-upstream-service-time",
            Duration::from_secs(30),
            || async {
                let answer = bookinfo.call("productpage", Request::get(&url)).await;
                answer.status == 200
                    && answer.request_header("x-custom-header") == Some("hello")
                    && answer.header("x-envoy-upstream-service-time").is_none()
            },
        )
        .await;
    let other = bookinfo.call("productpage", Request::get(&details)).await;
    assert_eq!(other.status, 200);
    assert_eq!(
        other.request_header("x-custom-header"),
        None,
        "details is on no labelled route"
    );
    assert!(
        other.header("x-envoy-upstream-service-time").is_some(),
        "{:?}",
        other.headers
    );
    bookinfo.delete_example("header-manipulation.yaml").await;
    bookinfo
        .until(
            "without the policy the headers are as sent",
            Duration::from_secs(30),
            || async {
                let answer = bookinfo.call("productpage", Request::get(&url)).await;
                answer.status == 200
                    && answer.request_header("x-custom-header").is_none()
                    && answer.header("x-envoy-upstream-service-time").is_some()
            },
        )
        .await;

    // Mirror: reviews v3 (cluster-2) sees a copy of every ratings request; the client sees
    // ratings' answer.
    let reviews_v3 = bookinfo.mesh.app("reviews-v3").admin_port;
    let received = || trellis_testkit::envoy_stat(reviews_v3, "http.inbound|9080.downstream_rq_total");
    bookinfo.apply_example("mirror.yaml").await;
    bookinfo
        .until(
            "a ratings request is mirrored to reviews in cluster-2",
            Duration::from_secs(30),
            || async {
                let before = received().await;
                let answer = bookinfo.call("productpage", Request::get(&url)).await;
                tokio::time::sleep(Duration::from_millis(300)).await;
                answer.status == 200 && received().await > before
            },
        )
        .await;
    let before = received().await;
    for _ in 0..20 {
        let answer = bookinfo.call("productpage", Request::get(&url)).await;
        assert_eq!(
            (answer.status, answer.field("service")),
            (200, "ratings"),
            "{}",
            answer.body
        );
    }
    bookinfo
        .until("reviews v3 got all 20 copies", Duration::from_secs(10), || async {
            received().await >= before + 20
        })
        .await;
    bookinfo.delete_example("mirror.yaml").await;
    bookinfo
        .until(
            "without the policy nothing is mirrored",
            Duration::from_secs(30),
            || async {
                let before = received().await;
                let answer = bookinfo.call("productpage", Request::get(&url)).await;
                tokio::time::sleep(Duration::from_millis(500)).await;
                answer.status == 200 && received().await == before
            },
        )
        .await;

    // HTTP buffer, on the productpage route (the guide's prerequisite route table).
    bookinfo.apply("productpage-rt.yaml", PRODUCTPAGE_ROUTE_TABLE).await;
    bookinfo.apply_example("http-buffer.yaml").await;
    let productpage = format!("{}/productpage", service_url("productpage"));
    let post = |size: usize| post_bytes(&bookinfo, &productpage, size);
    bookinfo
        .until(
            "a body over 16384 bytes is refused with 413",
            Duration::from_secs(30),
            || async { post(16385).await == 413 },
        )
        .await;
    assert_eq!(post(20_000).await, 413);
    assert_eq!(post(16384).await, 200, "a body of exactly maxRequestBytes fits");
    assert_eq!(post(100).await, 200);
    bookinfo.delete_example("http-buffer.yaml").await;
    bookinfo
        .until(
            "without the policy a large body passes",
            Duration::from_secs(30),
            || async { post(20_000).await == 200 },
        )
        .await;
    bookinfo.finish().await;
}

/// The status of a POST of `size` bytes to `url` from reviews v1.
async fn post_bytes(bookinfo: &Bookinfo, url: &str, size: usize) -> u16 {
    let body = vec![b'x'; size];
    let request = Request {
        method: "POST",
        url,
        body: Some(&body),
        ..Default::default()
    };
    bookinfo.call("reviews-v1", request).await.status
}

/// retry-only.yaml: "Requests on routes labelled route: ratings are retried up to 5 times, 2s
/// per try, on the listed conditions." A slow try ends after 2 s (a timeout is none of the
/// listed conditions, so it is not retried); a refused connection is retried 5 times.
#[tokio::test(flavor = "multi_thread")]
async fn retries_try_ratings_five_more_times_two_seconds_each() {
    let mut bookinfo = Bookinfo::start("gloo-retry").await;
    bookinfo.apply("ratings-rt.yaml", RATINGS_ROUTE_TABLE).await;
    let url = format!("{}/ratings/1", service_url("ratings"));
    bookinfo.apply_example("retry-only.yaml").await;
    bookinfo.chaos("ratings", "delay-ms/3000").await;
    bookinfo
        .until(
            "a try answering 3 s late ends at 2 s",
            Duration::from_secs(30),
            || async {
                let started = Instant::now();
                let status = bookinfo.call("productpage", Request::get(&url)).await.status;
                let took = started.elapsed();
                status == 504 && took >= Duration::from_millis(1900) && took < Duration::from_millis(2900)
            },
        )
        .await;
    bookinfo.chaos("ratings", "delay-ms/0").await;
    assert_eq!(bookinfo.call("productpage", Request::get(&url)).await.status, 200);

    // Ratings' sidecar crashes (a kill: its registration stays, so the endpoint does too): each
    // connection is refused, and retried 5 times.
    let client = bookinfo.mesh.app("productpage").admin_port;
    let retries =
        || trellis_testkit::envoy_stat_sum(client, r"^cluster\.outbound\|9080\|.*ratings.*\.upstream_rq_retry$");
    bookinfo.mesh.app_mut("ratings").sidecar.kill().await;
    bookinfo
        .until("ratings' sidecar is gone", Duration::from_secs(30), || async {
            bookinfo.call("productpage", Request::get(&url)).await.status == 503
        })
        .await;
    let before = retries().await;
    let answer = bookinfo.call("productpage", Request::get(&url)).await;
    assert_eq!(answer.status, 503, "{}", answer.body);
    assert_eq!(retries().await - before, 5, "retries of one refused request");

    bookinfo.delete_example("retry-only.yaml").await;
    bookinfo
        .until(
            "without the policy a refused request is not retried",
            Duration::from_secs(30),
            || async {
                let before = retries().await;
                let status = bookinfo.call("productpage", Request::get(&url)).await.status;
                status == 503 && retries().await == before
            },
        )
        .await;
    bookinfo.finish().await;
}

/// load-balancer-random.yaml: "Requests to the reviews services on port 9080 pick a backend at
/// random." load-balancer-sticky-cookie.yaml: "Session affinity to a reviews backend through the
/// cookie chocolate-chip (ttl 10s)." From productpage, reviews (its Kubernetes name) is v1 and
/// v2 of cluster-1.
#[tokio::test(flavor = "multi_thread")]
async fn reviews_balanced_at_random_then_sticky_by_cookie() {
    let bookinfo = Bookinfo::start("gloo-lb").await;
    let url = format!("{}/reviews/1", service_url("reviews"));

    // Without a policy Envoy's round robin alternates v1 and v2.
    let answers = sequence(&bookinfo, "productpage", &url, 40).await;
    assert!(answers.iter().all(|a| a.status == 200));
    assert!(repeats(&answers) <= 2, "round robin expected before the policy");

    bookinfo.apply_example("load-balancer-random.yaml").await;
    bookinfo
        .until(
            "reviews backends no longer alternate",
            Duration::from_secs(30),
            || async { repeats(&sequence(&bookinfo, "productpage", &url, 20).await) > 0 },
        )
        .await;
    let n = 200;
    let answers = sequence(&bookinfo, "productpage", &url, n).await;
    assert!(answers.iter().all(|a| a.status == 200));
    let v1 = answers.iter().filter(|a| a.field("version") == "v1").count();
    assert!(binomial_band(n, 0.5).contains(&v1), "{v1} of {n} from v1");
    let same = repeats(&answers);
    assert!(binomial_band(n - 1, 0.5).contains(&same), "{same} of {} repeats", n - 1);
    bookinfo.delete_example("load-balancer-random.yaml").await;

    bookinfo.apply_example("load-balancer-sticky-cookie.yaml").await;
    let set_cookie = || async {
        let answer = bookinfo.call("productpage", Request::get(&url)).await;
        answer.header("set-cookie").unwrap_or_default().to_string()
    };
    bookinfo
        .until(
            "reviews' answer sets the chocolate-chip cookie",
            Duration::from_secs(30),
            || async { set_cookie().await.starts_with("chocolate-chip=") },
        )
        .await;
    let set_cookie = set_cookie().await;
    assert!(set_cookie.contains("Max-Age=10"), "ttl 10s: {set_cookie}");
    let cookie = set_cookie.split(';').next().unwrap().to_string();
    let headers = [("cookie", cookie.as_str())];
    let pinned: std::collections::BTreeSet<String> = sequence_with(&bookinfo, &url, &headers, 20)
        .await
        .iter()
        .map(|a| a.field("version").to_string())
        .collect();
    assert_eq!(pinned.len(), 1, "one cookie, one backend: {pinned:?}");
    // Different cookies spread over both backends, each sticking to its own.
    let mut chosen = std::collections::BTreeSet::new();
    for i in 0..20 {
        let cookie = format!("chocolate-chip=cookie-{i}");
        let headers = [("cookie", cookie.as_str())];
        let versions: std::collections::BTreeSet<String> = sequence_with(&bookinfo, &url, &headers, 3)
            .await
            .iter()
            .map(|a| a.field("version").to_string())
            .collect();
        assert_eq!(versions.len(), 1, "{cookie} went to {versions:?}");
        chosen.extend(versions);
    }
    assert_eq!(chosen.len(), 2, "20 cookies all hashed to {chosen:?}");
    bookinfo.delete_example("load-balancer-sticky-cookie.yaml").await;
    bookinfo
        .until(
            "without the policy the cookie pins nothing",
            Duration::from_secs(30),
            || async {
                let answers = sequence_with(&bookinfo, &url, &headers, 6).await;
                answers.iter().all(|a| a.header("set-cookie").is_none()) && repeats(&answers) == 0
            },
        )
        .await;
    bookinfo.finish().await;
}

/// Answers from `n` GETs of `url` from productpage with `headers`.
async fn sequence_with(bookinfo: &Bookinfo, url: &str, headers: &[(&str, &str)], n: usize) -> Vec<Answer> {
    let mut answers = Vec::with_capacity(n);
    for _ in 0..n {
        answers.push(
            bookinfo
                .call("productpage", Request::get(url).with_headers(headers))
                .await,
        );
    }
    answers
}

/// outlier-detection.yaml: "Ejects a virtual destination's backend after 2 consecutive 5xx
/// errors, sweeping every 1s, for at least 30s, up to 100% of backends." On reviews.global
/// (reviews v1, v2 in cluster-1, v3 in cluster-2), a failing v1 is ejected and stays out.
#[tokio::test(flavor = "multi_thread")]
async fn outlier_detection_ejects_a_failing_reviews_backend() {
    let bookinfo = Bookinfo::start("gloo-outlier").await;
    bookinfo.apply("reviews-vd.yaml", REVIEWS_VIRTUAL_DESTINATION).await;
    bookinfo
        .until(
            "productpage reaches reviews.global",
            Duration::from_secs(30),
            || async { bookinfo.call("productpage", Request::get(REVIEWS_GLOBAL)).await.status == 200 },
        )
        .await;
    bookinfo.chaos("reviews-v1", "fail-every/1").await;
    // Without the policy v1 keeps getting its share, and keeps failing.
    let failed = bookinfo.tally("productpage", REVIEWS_GLOBAL, 30, "version");
    let failed = failed.await.get("HTTP 503").copied().unwrap_or(0);
    assert!(
        failed >= 3,
        "{failed} of 30 failed with v1 failing and no outlier detection"
    );

    bookinfo.apply_example("outlier-detection.yaml").await;
    bookinfo
        .until(
            "v1 is ejected: 30 answers in a row, none from v1",
            Duration::from_secs(30),
            || async {
                let answers = sequence(&bookinfo, "productpage", REVIEWS_GLOBAL, 30).await;
                answers.iter().all(|a| a.status == 200 && a.field("version") != "v1")
            },
        )
        .await;
    // Healthy again, v1 stays out for the ejection time (30 s).
    bookinfo.chaos("reviews-v1", "fail-every/0").await;
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        let answer = bookinfo.call("productpage", Request::get(REVIEWS_GLOBAL)).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_ne!(answer.field("version"), "v1", "v1 back before its ejection time ended");
    }
    bookinfo.finish().await;
}

/// The regions the failover examples name: cluster-1 in us-east, cluster-2 in us-west (in Gloo
/// the nodes' topology labels; here the agents' --region).
fn us_east_and_us_west() -> MeshOptions {
    let mut options = MeshOptions::free();
    options.cluster_agent_flags = vec![
        ("cluster-1".into(), vec!["--region".into(), "us-east".into()]),
        ("cluster-2".into(), vec!["--region".into(), "us-west".into()]),
    ];
    options
}

/// failover-distribute-weight.yaml: "Distributes (does not fail over) traffic from us-east
/// clients: 50% to us-west, 50% to us-east." failover-locality.yaml: "Traffic from clients in
/// region us-east fails over to matching destinations in region us-west only." With the guide's
/// reviews virtual destination and outlier detection (the failover guide's prerequisites),
/// productpage (cluster-1, us-east) calls reviews.global.
#[tokio::test(flavor = "multi_thread")]
async fn failover_by_region_from_us_east_to_us_west() {
    let bookinfo = Bookinfo::start_with("gloo-failover", us_east_and_us_west()).await;
    bookinfo.apply("reviews-vd.yaml", REVIEWS_VIRTUAL_DESTINATION).await;

    bookinfo.apply_example("failover-distribute-weight.yaml").await;
    bookinfo
        .until(
            "us-east's reviews.global traffic reaches us-west",
            Duration::from_secs(30),
            || async {
                let answers = sequence(&bookinfo, "productpage", REVIEWS_GLOBAL, 10).await;
                answers.iter().any(|a| a.field("cluster") == "cluster-2")
            },
        )
        .await;
    let n = 200;
    let by_cluster = bookinfo.tally("productpage", REVIEWS_GLOBAL, n, "cluster").await;
    let west = by_cluster.get("cluster-2").copied().unwrap_or(0);
    let east = by_cluster.get("cluster-1").copied().unwrap_or(0);
    assert_eq!(west + east, n, "{by_cluster:?}");
    assert!(
        binomial_band(n, 0.5).contains(&west),
        "50% to us-west expected: {by_cluster:?}"
    );
    // Both regions are where clusters run: the policy's status has no "matches nothing".
    let status = bookinfo
        .status("FailoverPolicy", "bookinfo", "locality-based-failover")
        .await;
    assert!(!status.to_string().contains("matches nothing"), "{status}");
    bookinfo.delete_example("failover-distribute-weight.yaml").await;

    bookinfo.apply_example("outlier-detection.yaml").await;
    bookinfo.apply_example("failover-locality.yaml").await;
    bookinfo
        .until(
            "us-east's clients keep to us-east while it is healthy",
            Duration::from_secs(30),
            || async {
                let answers = sequence(&bookinfo, "productpage", REVIEWS_GLOBAL, 40).await;
                answers
                    .iter()
                    .all(|a| a.status == 200 && a.field("cluster") == "cluster-1")
            },
        )
        .await;
    bookinfo.chaos("reviews-v1", "fail-every/1").await;
    bookinfo.chaos("reviews-v2", "fail-every/1").await;
    bookinfo
        .until(
            "us-east failing, reviews.global fails over to us-west",
            Duration::from_secs(30),
            || async {
                let answers = sequence(&bookinfo, "productpage", REVIEWS_GLOBAL, 20).await;
                answers
                    .iter()
                    .all(|a| a.status == 200 && a.field("cluster") == "cluster-2")
            },
        )
        .await;
    bookinfo.chaos("reviews-v1", "fail-every/0").await;
    bookinfo.chaos("reviews-v2", "fail-every/0").await;
    bookinfo.finish().await;
}

/// load-balancer-warmup.yaml: "New reviews instances get requests only after a 10s warm-up,
/// round robin otherwise." As Istio's `warmupDurationSecs` (Envoy's slow start), a new instance
/// starts at a tenth of its share, which grows to the full share over the 10 s. From
/// productpage, reviews v1 and v2 alternate; a new instance (v4) joins: in its first 3 s it gets
/// far less than the third round robin would give it, after the 10 s its third.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "Trellis sets Envoy's slow start (a 10 s slow_start_window on the round-robin cluster, \
            seen in productpage's config dump), yet the new instance gets its full third at once: \
            Envoy 1.40 apparently rebuilds its round-robin schedule on the host-set update before \
            it marks the new host as warming, and no later update within the window rebuilds it"]
async fn a_new_reviews_instance_warms_up_for_ten_seconds() {
    let mut bookinfo = Bookinfo::start("gloo-warmup").await;
    let url = format!("{}/reviews/1", service_url("reviews"));
    bookinfo.apply_example("load-balancer-warmup.yaml").await;
    let productpage = bookinfo.mesh.app("productpage").admin_port;
    bookinfo
        .until(
            "productpage's reviews cluster warms new endpoints up",
            Duration::from_secs(30),
            || async {
                let url = format!("http://127.0.0.1:{productpage}/config_dump?resource=dynamic_active_clusters");
                let dump = trellis_support::httpc::get(&url, Duration::from_secs(2)).await;
                dump.is_ok_and(|d| d.body.contains("slowStartWindow") || d.body.contains("slow_start_window"))
            },
        )
        .await;
    let answers = sequence(&bookinfo, "productpage", &url, 20).await;
    assert!(answers.iter().all(|a| a.status == 200));
    assert_eq!(repeats(&answers), 0, "round robin: v1 and v2 alternate");

    bookinfo.start_workload("reviews-v4", "bookinfo", "reviews", "v4", "cluster-1", 9080);
    // Trellis publishes an endpoint when its sidecar registers, before that sidecar listens
    // (Kubernetes would wait for readiness): its first picks fail with 503. Those are picks of
    // v4 too (v1 and v2 are healthy), so the warm-up is measured from the first pick either way.
    let picked_v4 = |answer: &Answer| answer.status != 200 || answer.field("version") == "v4";
    let mut joined = None;
    let mut seen: Vec<(Duration, bool, bool)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let answer = bookinfo.call("productpage", Request::get(&url)).await;
        if picked_v4(&answer) && joined.is_none() {
            joined = Some(Instant::now());
        }
        if let Some(start) = joined {
            if start.elapsed() > Duration::from_secs(15) {
                break;
            }
            let answered_v4 = answer.status == 200 && answer.field("version") == "v4";
            seen.push((start.elapsed(), picked_v4(&answer), answered_v4));
        }
        assert!(Instant::now() < deadline, "the new instance never got a request");
    }
    let share = |from: u64, to: u64, counts: fn(&(Duration, bool, bool)) -> bool| {
        let window: Vec<&(Duration, bool, bool)> = seen
            .iter()
            .filter(|(at, _, _)| *at >= Duration::from_secs(from) && *at < Duration::from_secs(to))
            .collect();
        let n = window.len();
        (
            window.into_iter().filter(|s| counts(s)).count() as f64 / n.max(1) as f64,
            n,
        )
    };
    let (early, early_n) = share(0, 3, |(_, picked, _)| *picked);
    let (late, late_n) = share(12, 15, |(_, _, answered)| *answered);
    // Warming, its share grows from about 3% to 13% in these 3 s; round robin would give 33%.
    assert!(early < 0.2, "v4 got {early:.2} of {early_n} requests in its first 3 s");
    assert!(
        late > 0.25,
        "v4 answered {late:.2} of {late_n} requests after its warm-up"
    );
    bookinfo.finish().await;
}
