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
            clients: None,
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

/// `clusters` configs seeing the same `shared` upstreams (the same `Arc`s, as translation makes
/// them), each with one upstream and one gateway upstream of its own.
fn fleet(clusters: usize, shared: usize) -> Vec<ClusterConfig> {
    let common: Vec<Arc<Upstream>> = (0..shared)
        .map(|i| Arc::new(upstream(&format!("svc-{i:04}"), "192.168.0.1")))
        .collect();
    (0..clusters)
        .map(|c| {
            let mut config = config(&[]);
            config.cluster = format!("cluster-{c}");
            config.upstreams = common.clone();
            config
                .upstreams
                .push(Arc::new(upstream(&format!("own-{c}"), "10.0.0.1")));
            config.upstreams.sort_by(|a, b| a.name.cmp(&b.name));
            config.gateway_upstreams = vec![upstream(&format!("gateway|own-{c}"), "10.0.0.1")];
            config
        })
        .collect()
}

fn shards_shared(a: &Sections, b: &Sections) -> usize {
    a.shards
        .iter()
        .zip(&b.shards)
        .filter(|(x, y)| Arc::ptr_eq(x, y))
        .count()
}

#[test]
fn clusters_with_the_same_view_share_their_shards() {
    let configs = fleet(3, 2000);
    let mut cache = EncodeCache::default();
    let encoded: Vec<Sections> = configs.iter().map(|c| Sections::encode_shared(c, &mut cache)).collect();
    // What differs: the base (cluster name), the own upstream, the own gateway upstream.
    assert!(shards_shared(&encoded[0], &encoded[1]) >= SHARDS - 3 * 2);
    assert!(shards_shared(&encoded[1], &encoded[2]) >= SHARDS - 3 * 2);
    for (config, sections) in configs.iter().zip(&encoded) {
        assert_eq!(&sections.decode().unwrap(), config);
        assert_eq!(sections, &Sections::encode(config), "sharing changes nothing sent");
        assert_eq!(sections.version(), Sections::encode(config).version());
    }
}

#[test]
fn the_same_change_to_many_clusters_is_made_once_and_applies_to_each() {
    let old = fleet(3, 2000);
    let mut cache = EncodeCache::default();
    let old_sections: Vec<Sections> = old.iter().map(|c| Sections::encode_shared(c, &mut cache)).collect();
    // The next translation: one shared upstream changed (a new Arc, shared again), one added.
    let changed = Arc::new(upstream("svc-0042", "192.168.0.2"));
    let added = Arc::new(upstream("svc-9999", "192.168.0.3"));
    let new: Vec<ClusterConfig> = old
        .iter()
        .map(|config| {
            let mut config = config.clone();
            let i = config.upstreams.iter().position(|u| u.name == "svc-0042").unwrap();
            config.upstreams[i] = changed.clone();
            config.upstreams.push(added.clone());
            config.upstreams.sort_by(|a, b| a.name.cmp(&b.name));
            config
        })
        .collect();
    let mut cache = EncodeCache::default();
    let new_sections: Vec<Sections> = new
        .iter()
        .zip(old.iter().zip(&old_sections))
        .map(|(config, (old, old_sections))| Sections::encode_changes(config, old, old_sections, &mut cache))
        .collect();
    let touched = [shard_of("upstream/svc-0042"), shard_of("upstream/svc-9999")];
    // A touched shard the clusters shared stays shared (one holding a cluster's own upstream
    // was that cluster's alone).
    for i in touched {
        if Arc::ptr_eq(&old_sections[0].shards[i], &old_sections[1].shards[i]) {
            assert!(
                Arc::ptr_eq(&new_sections[0].shards[i], &new_sections[1].shards[i]),
                "shard {i}"
            );
        }
    }
    assert!(shards_shared(&new_sections[0], &new_sections[1]) >= SHARDS - 3 * 2);
    for c in 0..3 {
        assert_eq!(new_sections[c], Sections::encode(&new[c]), "cluster {c}");
        let (upserts, removes) = new_sections[c].delta_from(Some(&old_sections[c]));
        let mut names: Vec<&str> = upserts.iter().map(|(n, _)| *n).collect();
        names.sort();
        assert_eq!(names, ["upstream/svc-0042", "upstream/svc-9999"]);
        assert!(removes.is_empty());
        let changed: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let patched = new_sections[c].patch(old[c].clone(), &removes, &changed).unwrap();
        assert_eq!(patched, new[c], "cluster {c}");
    }
}

#[test]
fn shards_of_equal_digest_but_other_content_stay_apart() {
    // Same names and versions, other payloads: the digest cannot tell them apart, the content can.
    let section = |payload: &[u8]| EncodedSection {
        version: 7,
        payload: payload.into(),
    };
    let one = Shard::new(BTreeMap::from([("upstream/a".to_string(), section(b"1"))]));
    let other = Shard::new(BTreeMap::from([("upstream/a".to_string(), section(b"2"))]));
    let again = Shard::new(BTreeMap::from([("upstream/a".to_string(), section(b"1"))]));
    assert_eq!(one.digest, other.digest);
    let mut cache = EncodeCache::default();
    let one = cache.intern(one);
    let other = cache.intern(other);
    assert!(!Arc::ptr_eq(&one, &other));
    assert!(Arc::ptr_eq(&one, &cache.intern(again)));
}
