use trellis_model::ir::{Endpoint, Upstream, VirtualHost};
use trellis_model::policy::InboundPolicy;

use super::*;

pub(crate) fn upstream(name: &str, address: &str) -> Upstream {
    Upstream {
        name: name.to_string(),
        key: format!("key-{name}"),
        endpoints: vec![Endpoint {
            address: address.to_string(),
            port: 15006,
            weight: 1,
            cluster: "c1".to_string(),
            via_gateway: false,
            priority: 0,
        }],
        ..Default::default()
    }
}

pub(crate) fn config(upstreams: &[(&str, &str)]) -> ClusterConfig {
    ClusterConfig {
        cluster: "c1".to_string(),
        trust_domain: "trellis.local".to_string(),
        upstreams: upstreams.iter().map(|(n, a)| Arc::new(upstream(n, a))).collect(),
        virtual_hosts: vec![Arc::new(VirtualHost {
            name: "a.mesh:80".to_string(),
            domains: vec!["a.mesh".to_string()],
            routes: Vec::new(),
            workspaces: None,
        })],
        gateway_upstreams: vec![upstream("gateway|a", "10.0.0.9")],
        inbound_policies: vec![
            InboundPolicy {
                name: "ns/second".to_string(),
                ..Default::default()
            },
            InboundPolicy {
                name: "ns/first".to_string(),
                ..Default::default()
            },
        ],
        ..Default::default()
    }
}

#[test]
fn sections_decode_to_the_config_they_were_cut_from() {
    let config = config(&[("a", "10.0.0.1"), ("b", "10.0.0.2")]);
    let sections = Sections::encode(&config);
    assert_eq!(
        sections.to_map().keys().map(String::as_str).collect::<Vec<_>>(),
        [
            "base",
            "gateway/gateway|a",
            "inbound-policies",
            "upstream/a",
            "upstream/b",
            "vhost/a.mesh:80"
        ]
    );
    // Policies keep their order: it is their precedence.
    assert_eq!(sections.decode().unwrap(), config);
}

#[test]
fn a_change_re_encodes_only_the_sections_it_touches() {
    let old = config(&[("a", "10.0.0.1"), ("b", "10.0.0.2"), ("c", "10.0.0.3")]);
    let old_sections = Sections::encode(&old);
    let new = config(&[("a", "10.0.0.1"), ("b", "10.0.0.20"), ("d", "10.0.0.4")]);
    let new_sections = Sections::encode_changes(&new, &old, &old_sections, &mut EncodeCache::default());
    assert_eq!(new_sections, Sections::encode(&new), "reuse must not change the result");
    // The untouched section is the very same allocation, not an equal copy.
    assert!(std::sync::Arc::ptr_eq(
        &new_sections.get("upstream/a").unwrap().payload,
        &old_sections.get("upstream/a").unwrap().payload
    ));
    let (upserts, removes) = new_sections.delta_from(Some(&old_sections));
    let mut names: Vec<&str> = upserts.iter().map(|(name, _)| *name).collect();
    names.sort();
    assert_eq!(names, ["upstream/b", "upstream/d"]);
    assert_eq!(removes, ["upstream/c"]);
    assert_ne!(old_sections.version(), new_sections.version());
}

#[test]
fn patching_equals_decoding() {
    let old = config(&[("a", "10.0.0.1"), ("b", "10.0.0.2"), ("c", "10.0.0.3")]);
    let old_sections = Sections::encode(&old);
    let mut new = config(&[("a", "10.0.0.1"), ("b", "10.0.0.20"), ("d", "10.0.0.4")]);
    new.inbound_policies.clear();
    new.trust_domain = "other.domain".to_string();
    let new_sections = Sections::encode_changes(&new, &old, &old_sections, &mut EncodeCache::default());
    let (upserts, removes) = new_sections.delta_from(Some(&old_sections));
    let changed: Vec<String> = upserts.iter().map(|(name, _)| name.to_string()).collect();
    let patched = new_sections.patch(old.clone(), &removes, &changed).unwrap();
    assert_eq!(patched, new);
    assert_eq!(patched, new_sections.decode().unwrap());
}

#[test]
fn a_section_that_holds_another_name_is_refused() {
    let config = config(&[("a", "10.0.0.1")]);
    let sections = Sections::encode(&config);
    let wrong = EncodedSection::encode(&upstream("z", "10.0.0.1"));
    let sections = sections.with_changes(vec![("upstream/a".to_string(), wrong)], &[]);
    let error = sections.decode().unwrap_err();
    assert!(error.contains("upstream/a") && error.contains("\"z\""), "{error}");
}

#[test]
fn a_change_copies_only_the_shards_it_touches() {
    let names: Vec<String> = (0..1000).map(|i| format!("svc-{i}")).collect();
    let pairs: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "10.0.0.1")).collect();
    let old = Sections::encode(&config(&pairs));
    let changed = EncodedSection::encode(&upstream("svc-7", "10.9.9.9"));
    let new = old.with_changes(
        vec![("upstream/svc-7".to_string(), changed.clone())],
        &["upstream/svc-8".to_string()],
    );
    let shared = old
        .shards
        .iter()
        .zip(&new.shards)
        .filter(|(a, b)| Arc::ptr_eq(a, b))
        .count();
    assert!(shared >= SHARDS - 2, "{shared} shards shared");
    let (upserts, removes) = new.delta_from(Some(&old));
    assert_eq!(upserts, [("upstream/svc-7", &changed)]);
    assert_eq!(removes, ["upstream/svc-8"]);
    // Encoding the same config from scratch gives the same sections and version.
    let mut expected = config(&pairs);
    expected.upstreams.retain(|u| u.name != "svc-8");
    Arc::make_mut(expected.upstreams.iter_mut().find(|u| u.name == "svc-7").unwrap()).endpoints[0].address =
        "10.9.9.9".into();
    assert_eq!(Sections::encode(&expected).version(), new.version());
}

#[test]
fn what_clusters_share_is_encoded_once() {
    let first = config(&[("a", "10.0.0.1"), ("b", "10.0.0.2")]);
    // A second cluster's config holding the same upstream `a` (the same Arc) and its own `b`.
    let mut second = first.clone();
    second.cluster = "c2".to_string();
    second.upstreams[1] = Arc::new(upstream("b", "10.0.0.20"));
    let mut cache = EncodeCache::default();
    let one = Sections::encode_shared(&first, &mut cache);
    let two = Sections::encode_shared(&second, &mut cache);
    let payload = |s: &Sections, name: &str| s.get(name).unwrap().payload.clone();
    assert!(Arc::ptr_eq(&payload(&one, "upstream/a"), &payload(&two, "upstream/a")));
    assert!(!Arc::ptr_eq(&payload(&one, "upstream/b"), &payload(&two, "upstream/b")));
    assert_eq!(two, Sections::encode(&second), "sharing changes nothing sent");
}
