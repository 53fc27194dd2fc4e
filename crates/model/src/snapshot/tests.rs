//! Changing resources in place keeps exactly the order a snapshot built afresh has.

use std::collections::BTreeMap;

use trellis_api::{Resource, ResourceKey};

use super::*;

fn table(name: &str, revision: u64, host: &str) -> Resource {
    let yaml = format!(
        "apiVersion: networking.gloo.solo.io/v2\nkind: RouteTable\nmetadata: {{name: {name}, namespace: demo}}\nspec: {{hosts: [{host}]}}\n"
    );
    let mut resource = trellis_api::parse_documents("t.yaml", &yaml).unwrap().remove(0);
    resource.metadata.creation_revision = revision;
    resource
}

#[test]
fn changed_resources_keep_the_order_of_a_fresh_snapshot_few_or_many_at_a_time() {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut below = |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };
    let mut snapshot = Snapshot::default();
    let mut expected: BTreeMap<ResourceKey, Resource> = BTreeMap::new();
    let mut revision = 0;
    for round in 0..60 {
        // Rounds alternate between a few changes and a bulk of them.
        let count = if round % 2 == 0 { 1 + below(5) } else { 20 + below(40) };
        let mut changes = Vec::new();
        let mut firsts: BTreeMap<ResourceKey, Option<Resource>> = BTreeMap::new();
        for _ in 0..count {
            let name = format!("t{}", below(50));
            let key = ResourceKey::new(trellis_api::Kind::RouteTable, "demo", &name);
            firsts.entry(key.clone()).or_insert_with(|| expected.get(&key).cloned());
            let change = if below(4) == 0 {
                expected.remove(&key);
                None
            } else {
                // An update keeps its creation revision; a creation takes the next one.
                let created = expected.get(&key).map(|r| r.metadata.creation_revision);
                let created = created.unwrap_or_else(|| {
                    revision += 1;
                    revision
                });
                let resource = table(&name, created, &format!("h{}.example", below(9)));
                expected.insert(key.clone(), resource.clone());
                Some(resource)
            };
            changes.push((key, change));
        }
        let before: BTreeMap<ResourceKey, Option<Resource>> = snapshot.change_resources(changes).into_iter().collect();
        assert_eq!(before, firsts, "round {round}: each key's version before the round");
        let fresh = Snapshot::new(expected.values().cloned().collect(), BTreeMap::new());
        assert_eq!(snapshot.resources, fresh.resources, "round {round}");
    }
}
