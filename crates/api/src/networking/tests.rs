//! RouteTable delegation as Gloo's YAML writes it: loads as is; each mistake names its field.

use crate::{DelegateSortMethod, Spec, parse_documents};

const PARENT_AND_CHILD: &str = "
apiVersion: networking.gloo.solo.io/v2
kind: RouteTable
metadata: {name: bookinfo-root-routes, namespace: bookinfo}
spec:
  hosts: [uk.bookinfo.com, eu.bookinfo.com]
  virtualGateways: [{name: my-gateway, namespace: my-gateway-ws}]
  defaultDestination: {ref: {name: reviews, namespace: prod}, port: {number: 9080}}
  http:
  - name: lambda
    matchers: [{uri: {prefix: /lambda}}]
    labels: {route: lambda}
    delegate:
      allowedRoutes:
      - cloudProvider: {aws: {lambdaFunctions: [backend-function-.*], iamRoles: [dev-team-B-.*], regions: [us-east-2]}}
      routeTables: [{labels: {table: lambda}}, {name: other, namespace: team, workspace: team-ws}]
      sortMethod: ROUTE_SPECIFICITY
---
apiVersion: networking.gloo.solo.io/v2
kind: RouteTable
metadata: {name: child, namespace: team, labels: {table: lambda}}
spec:
  weight: 100
  defaultDestination: {ref: {name: reviews, namespace: prod}, port: {number: 9080}}
  http:
  - name: all
    forwardTo: {}
";

#[test]
fn loads_a_parent_and_a_child_table_as_gloo_writes_them() {
    let resources = parse_documents("delegation.yaml", PARENT_AND_CHILD).unwrap();
    let Spec::RouteTable(parent) = &resources[0].spec else {
        panic!()
    };
    let delegate = parent.http[0].delegate.as_ref().unwrap();
    assert_eq!(delegate.sort_method, Some(DelegateSortMethod::RouteSpecificity));
    assert_eq!(delegate.route_tables[1].workspace, "team-ws");
    let aws = delegate.allowed_routes[0]
        .cloud_provider
        .as_ref()
        .unwrap()
        .aws
        .as_ref()
        .unwrap();
    assert_eq!(aws.regions, ["us-east-2"]);
    let Spec::RouteTable(child) = &resources[1].spec else {
        panic!()
    };
    assert_eq!(child.weight, Some(100));
    assert_eq!(child.default_destination.as_ref().unwrap().reference.name, "reviews");
}

fn errors(yaml: &str) -> Vec<(Option<String>, String)> {
    match parse_documents("bad.yaml", yaml) {
        Ok(r) => panic!("accepted: {r:?}"),
        Err(error) => error.errors().into_iter().map(|e| (e.field, e.message)).collect(),
    }
}

fn table(spec: &str) -> String {
    format!(
        "apiVersion: networking.gloo.solo.io/v2\nkind: RouteTable\nmetadata: {{name: t, namespace: ns}}\nspec:\n{spec}"
    )
}

#[test]
fn each_delegation_mistake_names_its_field() {
    let cases = [
        (
            "  hosts: [a.com]\n  http: [{delegate: {routeTables: [{labelz: {a: b}}]}}]",
            "spec.http[0].delegate.routeTables[0].labelz",
            "unknown field",
        ),
        (
            "  hosts: [a.com]\n  http: [{delegate: {routeTables: [{name: c}], sortMethod: BY_NAME}}]",
            "spec.http[0].delegate.sortMethod",
            "unknown variant",
        ),
        (
            "  hosts: [a.com]\n  http: [{delegate: {routeTables: []}}]",
            "spec.http[0].delegate.routeTables",
            "select at least one route table",
        ),
        (
            "  hosts: [a.com]\n  http: [{delegate: {routeTables: [{name: c}], allowedRoutes: [{cloudProvider: {aws: {iamRoles: ['(']}}}]}}]",
            "spec.http[0].delegate.allowedRoutes[0].cloudProvider.aws.iamRoles[0]",
            "regular expression",
        ),
        (
            "  virtualGateways: [{name: gw}]\n  http: [{directResponse: {status: 200}}]",
            "spec.virtualGateways",
            "must be empty in a table without hosts",
        ),
        (
            "  http: [{forwardTo: {}}]",
            "spec.http[0].forwardTo.destinations",
            "or set spec.defaultDestination",
        ),
    ];
    for (spec, field, message) in cases {
        let found = errors(&table(spec));
        assert!(
            found
                .iter()
                .any(|(f, m)| f.as_deref() == Some(field) && m.contains(message)),
            "{spec}\nwanted {field}: {message}, got {found:#?}"
        );
    }
}
