use super::*;
use crate::sections::tests::{config, upstream};

/// What the management server does for one change: the delta from what the agent holds.
fn send(new: &Sections, held: Option<&Sections>) -> Vec<ConfigDelta> {
    let base = held.map(Sections::version).unwrap_or_default();
    let (upserts, removes) = new.delta_from(held);
    chunk(&new.version(), &base, &upserts, removes).collect()
}

fn deliver(receiver: &mut Receiver, messages: Vec<ConfigDelta>) -> Result<Option<ClusterConfig>, String> {
    let mut last = Ok(None);
    for message in messages {
        last = receiver.receive(message, |_| Ok(()));
        if last.is_err() {
            break;
        }
    }
    last
}

/// A small xorshift generator: randomized but repeatable sequences without a dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn random_change_sequences_arrive_as_the_sender_has_them() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut receiver = Receiver::default();
    let mut sent: Option<(ClusterConfig, Sections)> = None;
    let mut current = config(&[]);
    for step in 0..300 {
        // Add, change or drop a few upstreams; sometimes the policies or the base too.
        for _ in 0..1 + rng.below(4) {
            let name = format!("u{:03}", rng.below(60));
            match rng.below(3) {
                0 => current.upstreams.retain(|u| u.name != name),
                _ => {
                    let fresh = upstream(&name, &format!("10.0.{}.{}", rng.below(4), rng.below(250)));
                    match current.upstreams.binary_search_by(|u| u.name.cmp(&name)) {
                        Ok(i) => current.upstreams[i] = fresh.into(),
                        Err(i) => current.upstreams.insert(i, fresh.into()),
                    }
                }
            }
        }
        if rng.below(10) == 0 {
            current.inbound_policies.reverse();
        }
        if rng.below(10) == 0 {
            current
                .namespace_workspaces
                .insert(format!("ns{step}"), "ws".to_string());
        }
        let sections = match &sent {
            Some((old, old_sections)) => {
                let mut cache = crate::sections::EncodeCache::default();
                Sections::encode_changes(&current, old, old_sections, &mut cache)
            }
            None => Sections::encode(&current),
        };
        assert_eq!(
            sections,
            Sections::encode(&current),
            "step {step}: encoding the changes equals encoding it all"
        );
        let messages = send(&sections, sent.as_ref().map(|(_, s)| s));
        let applied = deliver(&mut receiver, messages).unwrap().expect("a complete change");
        assert_eq!(applied, current, "step {step}");
        assert_eq!(receiver.version(), sections.version());
        sent = Some((current.clone(), sections));
    }
}

#[test]
fn a_large_config_travels_in_chunks_under_the_limit() {
    let names: Vec<String> = (0..30_000).map(|i| format!("svc-{i:05}.mesh.internal")).collect();
    let pairs: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "10.1.2.3")).collect();
    let config = config(&pairs);
    let sections = Sections::encode(&config);
    let messages = send(&sections, None);
    assert!(messages.len() > 1, "{} messages", messages.len());
    for message in &messages {
        let size = prost::Message::encoded_len(message);
        assert!(size < CHUNK_BYTES + 64 * 1024, "{size} bytes");
    }
    let mut receiver = Receiver::default();
    let mut results = Vec::new();
    for message in messages {
        results.push(receiver.receive(message, |_| Ok(())).unwrap());
    }
    assert!(results[..results.len() - 1].iter().all(Option::is_none));
    assert_eq!(results.last().unwrap().as_ref(), Some(&config));
}

#[test]
fn a_refused_change_leaves_the_held_config_as_it_was() {
    let first = config(&[("a", "10.0.0.1")]);
    let first_sections = Sections::encode(&first);
    let mut receiver = Receiver::default();
    deliver(&mut receiver, send(&first_sections, None)).unwrap();
    let held = receiver.version().to_string();

    let second = config(&[("a", "10.0.0.2")]);
    let second_sections = Sections::encode(&second);

    // A delta from a base the agent does not hold.
    let mut stale = send(&second_sections, Some(&first_sections));
    stale[0].base_version = "0123456789abcdef".to_string();
    let error = deliver(&mut receiver, stale).unwrap_err();
    assert!(error.contains("holds"), "{error}");

    // A section whose payload does not match its version.
    let mut tampered = send(&second_sections, Some(&first_sections));
    tampered[0].upserts[0].payload = serde_json::to_vec(&upstream("a", "6.6.6.6")).unwrap().into();
    let error = deliver(&mut receiver, tampered).unwrap_err();
    assert!(error.contains("does not match its version"), "{error}");

    // A section missing: the assembled version differs from the announced one.
    let mut partial = send(&second_sections, None);
    partial[0].upserts.retain(|s| s.name != "base");
    let error = deliver(&mut receiver, partial).unwrap_err();
    assert!(error.contains("missing or extra"), "{error}");

    // The caller's own check refuses too, and nothing is taken.
    let error = receiver
        .receive(send(&second_sections, Some(&first_sections)).remove(0), |_| {
            Err("wrong cluster".to_string())
        })
        .unwrap_err();
    assert_eq!(error, "wrong cluster");

    assert_eq!(receiver.version(), held);
    let applied = deliver(&mut receiver, send(&second_sections, Some(&first_sections)))
        .unwrap()
        .unwrap();
    assert_eq!(applied, second);
}

#[test]
fn a_change_interrupted_by_another_is_dropped() {
    let big: Vec<String> = (0..20_000).map(|i| format!("svc-{i:05}")).collect();
    let pairs: Vec<(&str, &str)> = big.iter().map(|n| (n.as_str(), "10.1.2.3")).collect();
    let first = Sections::encode(&config(&pairs));
    let mut messages = send(&first, None);
    assert!(messages.len() > 1);
    let mut receiver = Receiver::default();
    assert_eq!(receiver.receive(messages.remove(0), |_| Ok(())).unwrap(), None);
    let other = Sections::encode(&config(&[("x", "10.0.0.1")]));
    let error = deliver(&mut receiver, send(&other, None)).unwrap_err();
    assert!(error.contains("in the middle of"), "{error}");
    assert_eq!(receiver.version(), "");
    // The next whole config is taken.
    assert!(deliver(&mut receiver, send(&other, None)).unwrap().is_some());
}

#[test]
fn messages_share_the_payloads_they_carry() {
    let sections = Sections::encode(&config(&[("a", "10.0.0.1"), ("b", "10.0.0.2")]));
    let messages = send(&sections, None);
    for section in messages.iter().flat_map(|m| &m.upserts) {
        let kept = sections.get(&section.name).unwrap();
        assert_eq!(
            section.payload.as_ptr(),
            kept.payload.as_ptr(),
            "{} was copied",
            section.name
        );
    }
}

#[test]
fn only_the_last_message_of_a_change_carries_removes_and_no_more() {
    let names: Vec<String> = (0..5_000).map(|i| format!("svc-{i:05}.mesh.internal")).collect();
    let pairs: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "10.1.2.3")).collect();
    let sections = Sections::encode(&config(&pairs));
    let (upserts, _) = sections.delta_from(None);
    let removes = vec!["upstream/gone".to_string()];
    let messages: Vec<ConfigDelta> = chunk("v2", "v1", &upserts, removes.clone()).collect();
    assert!(messages.len() > 2, "{} messages", messages.len());
    let (last, rest) = messages.split_last().unwrap();
    assert!(
        rest.iter()
            .all(|m| m.more && m.removes.is_empty() && !m.upserts.is_empty())
    );
    assert!(!last.more);
    assert_eq!(last.removes, removes);
    let sent: usize = messages.iter().map(|m| m.upserts.len()).sum();
    assert_eq!(sent, upserts.len());
    // Nothing to upsert is still one message: the removes, or an empty change of version.
    assert_eq!(chunk("v3", "v2", &[], Vec::new()).count(), 1);
}
