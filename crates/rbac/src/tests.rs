use super::*;

fn resources(yaml: &str) -> Vec<Resource> {
    trellis_api::parse_documents("test.yaml", yaml).expect("valid RBAC objects")
}

fn user(name: &str, groups: &[&str]) -> User {
    User {
        name: name.into(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
    }
}

fn request<'a>(verb: &'a str, group: &'a str, resource: &'a str, namespace: Option<&'a str>) -> Request<'a> {
    Request {
        verb,
        group,
        resource,
        namespace,
        name: None,
    }
}

const NETWORKING: &str = "networking.gloo.solo.io";

fn owner(namespace: &str) -> Option<String> {
    match namespace {
        "team-a" | "team-a-config" => Some("team-a".into()),
        "team-b" => Some("team-b".into()),
        _ => None,
    }
}

fn allowed(decision: &Decision) -> bool {
    matches!(decision, Decision::Allow { .. })
}

#[test]
fn nothing_is_allowed_without_a_binding() {
    let policy = Policy::from_resources(&[]);
    let decision = policy.authorize(
        &user("mallory", &[]),
        &request("list", NETWORKING, "routetables", Some("demo")),
        &owner,
    );
    let Decision::Deny { reason } = decision else {
        panic!("allowed without a binding")
    };
    assert!(reason.contains("\"mallory\""), "{reason}");
    assert!(
        reason.contains("list routetables.networking.gloo.solo.io in namespace demo"),
        "{reason}"
    );
}

#[test]
fn the_admins_group_may_do_anything() {
    let policy = Policy::from_resources(&[]);
    let admin = user("admin", &[ADMINS_GROUP]);
    for verb in ["create", "delete", "get"] {
        assert!(allowed(&policy.authorize(
            &admin,
            &request(verb, "rbac.authorization.k8s.io", "clusterrolebindings", None),
            &owner
        )));
    }
}

#[test]
fn a_viewer_reads_config_but_never_secrets_or_writes() {
    let stored = resources(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {name: viewers}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: trellis-viewer}\nsubjects: [{kind: Group, name: auditors}]\n",
    );
    let policy = Policy::from_resources(&stored);
    let viewer = user("vera", &["auditors"]);
    assert!(allowed(&policy.authorize(
        &viewer,
        &request("list", NETWORKING, "routetables", Some("any")),
        &owner
    )));
    for (verb, group, resource) in [
        ("create", NETWORKING, "routetables"),
        ("get", "", "secrets"),
        ("list", "", "secrets"),
        ("list", "trellis.io", "auditevents"),
        ("create", "trellis.io", "apitokens"),
    ] {
        assert!(
            !allowed(&policy.authorize(&viewer, &request(verb, group, resource, Some("demo")), &owner)),
            "{verb} {resource}"
        );
    }
}

#[test]
fn a_workspace_scoped_binding_grants_only_in_the_workspace_namespaces() {
    let stored = resources(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {name: team-a-ops, annotations: {trellis.io/workspace: team-a}}\nroleRef: {kind: ClusterRole, name: trellis-workspace-operator}\nsubjects: [{kind: User, name: alice}]\n",
    );
    let policy = Policy::from_resources(&stored);
    let alice = user("alice", &[]);
    for namespace in ["team-a", "team-a-config"] {
        assert!(allowed(&policy.authorize(
            &alice,
            &request("create", NETWORKING, "routetables", Some(namespace)),
            &owner
        )));
    }
    for namespace in [Some("team-b"), Some("default"), None] {
        assert!(!allowed(&policy.authorize(
            &alice,
            &request("create", NETWORKING, "routetables", namespace),
            &owner
        )));
    }
    // The operator persona does not manage workspaces, clusters or RBAC.
    assert!(!allowed(&policy.authorize(
        &alice,
        &request("create", "admin.gloo.solo.io", "workspaces", Some("team-a")),
        &owner
    )));
    assert!(!allowed(&policy.authorize(
        &alice,
        &request("create", "rbac.authorization.k8s.io", "rolebindings", Some("team-a")),
        &owner
    )));
}

#[test]
fn a_role_binding_grants_its_role_in_its_namespace_only() {
    let stored = resources(concat!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: rt-editor, namespace: demo}\n",
        "rules: [{apiGroups: [networking.gloo.solo.io], resources: [routetables], verbs: [get, update], resourceNames: [backend]}]\n",
        "---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: bob-rt, namespace: demo}\n",
        "roleRef: {kind: Role, name: rt-editor}\nsubjects: [{kind: User, name: bob}]\n",
    ));
    let policy = Policy::from_resources(&stored);
    let bob = user("bob", &[]);
    let mut named = request("update", NETWORKING, "routetables", Some("demo"));
    named.name = Some("backend");
    assert!(allowed(&policy.authorize(&bob, &named, &owner)));
    named.name = Some("frontend");
    assert!(
        !allowed(&policy.authorize(&bob, &named, &owner)),
        "resourceNames limit the rule"
    );
    named.name = Some("backend");
    named.namespace = Some("other");
    assert!(
        !allowed(&policy.authorize(&bob, &named, &owner)),
        "only in the binding's namespace"
    );
}

#[test]
fn a_stored_cluster_role_cannot_replace_a_built_in_one() {
    let stored = resources(concat!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: trellis-viewer}\n",
        "rules: [{apiGroups: ['*'], resources: ['*'], verbs: ['*']}]\n",
        "---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {name: v}\n",
        "roleRef: {kind: ClusterRole, name: trellis-viewer}\nsubjects: [{kind: User, name: vera}]\n",
    ));
    let policy = Policy::from_resources(&stored);
    assert!(!allowed(&policy.authorize(
        &user("vera", &[]),
        &request("get", "", "secrets", Some("demo")),
        &owner
    )));
}

#[test]
fn nobody_grants_what_they_do_not_hold() {
    // Bob may manage RoleBindings in demo and edit routes there, nothing else.
    let stored = resources(concat!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: binder, namespace: demo}\n",
        "rules: [{apiGroups: [rbac.authorization.k8s.io], resources: [rolebindings], verbs: ['*']},",
        " {apiGroups: [networking.gloo.solo.io], resources: [routetables], verbs: ['*']}]\n",
        "---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: bob, namespace: demo}\n",
        "roleRef: {kind: Role, name: binder}\nsubjects: [{kind: User, name: bob}]\n",
    ));
    let policy = Policy::from_resources(&stored);
    let bob = user("bob", &[]);
    let universe = [
        (NETWORKING, "routetables"),
        (NETWORKING, "virtualdestinations"),
        ("", "secrets"),
        ("rbac.authorization.k8s.io", "rolebindings"),
    ];
    let admin_rules = policy.rules_of(
        &trellis_api::RoleRef {
            kind: "ClusterRole".into(),
            name: ADMIN_ROLE.into(),
            ..Default::default()
        },
        None,
    );
    assert!(!admin_rules.is_empty());
    let error = policy
        .covers(&bob, &admin_rules, Some("demo"), &universe, &owner)
        .unwrap_err();
    assert!(error.contains("may not grant"), "{error}");
    // What Bob holds in demo he may grant there, and not elsewhere.
    let routes = vec![PolicyRule {
        api_groups: vec![NETWORKING.into()],
        resources: vec!["routetables".into()],
        verbs: vec!["get".into(), "update".into()],
        ..Default::default()
    }];
    assert!(policy.covers(&bob, &routes, Some("demo"), &universe, &owner).is_ok());
    assert!(policy.covers(&bob, &routes, Some("other"), &universe, &owner).is_err());
    assert!(policy.covers(&bob, &routes, None, &universe, &owner).is_err());
    // The admins group holds everything.
    assert!(
        policy
            .covers(&user("root", &[ADMINS_GROUP]), &admin_rules, None, &universe, &owner)
            .is_ok()
    );
}
