//! Semantic checks that types alone cannot express. Each problem is `(field path, message)`.

use crate::common::{DestinationReference, PortSelector};
use crate::envoy_limits::{check_matched_header_name, check_no_control, check_regex, check_weight_sum};
use crate::networking::{DelegateAction, HttpRoute, RequestMatcher, RouteTableSpec, VirtualDestinationSpec};
use crate::resource::{Resource, Spec};
use crate::workspace::{WorkspaceSettingsSpec, WorkspaceSpec};

type Problems = Vec<(String, String)>;

pub(crate) fn validate(resource: &Resource) -> Result<(), Problems> {
    let mut problems = Problems::new();
    check_name(&mut problems, "metadata.name", &resource.metadata.name, 253, true);
    check_name(
        &mut problems,
        "metadata.namespace",
        &resource.metadata.namespace,
        63,
        false,
    );
    match &resource.spec {
        Spec::VirtualDestination(spec) => virtual_destination(&mut problems, spec),
        Spec::RouteTable(spec) => route_table(&mut problems, spec),
        Spec::Workspace(spec) => workspace(&mut problems, spec),
        Spec::WorkspaceSettings(spec) => workspace_settings(&mut problems, spec),
        Spec::AccessPolicy(spec) => crate::validate_policy::access_policy(&mut problems, spec),
        Spec::RetryTimeoutPolicy(spec) => crate::validate_policy::retry_timeout_policy(&mut problems, spec),
        Spec::FaultInjectionPolicy(spec) => crate::validate_policy::fault_injection_policy(&mut problems, spec),
        Spec::HeaderManipulationPolicy(spec) => crate::validate_policy::header_manipulation_policy(&mut problems, spec),
        Spec::OutlierDetectionPolicy(spec) => crate::validate_policy::outlier_detection_policy(&mut problems, spec),
        Spec::FailoverPolicy(spec) => crate::validate_policy::failover_policy(&mut problems, spec),
        Spec::ExternalService(spec) => external_service(&mut problems, spec),
        Spec::VirtualGateway(spec) => virtual_gateway(&mut problems, spec),
        Spec::ExternalEndpoint(spec) => {
            if spec.address.is_empty() {
                push(&mut problems, "spec.address", "is required: an IP address or host name");
            }
            for (i, port) in spec.ports.iter().enumerate() {
                check_port_number(&mut problems, &format!("spec.ports[{i}].number"), port.number);
            }
        }
        Spec::Secret(spec) => crate::validate_addons::secret(&mut problems, spec),
        Spec::RootTrustPolicy(spec) => spec.validate(&resource.metadata.namespace, &mut problems),
        Spec::ExtAuthServer(spec) => crate::validate_addons::ext_auth_server(&mut problems, spec),
        Spec::ExtAuthPolicy(spec) => crate::validate_addons::ext_auth_policy(&mut problems, spec),
        Spec::RateLimitServerConfig(spec) => crate::validate_addons::rate_limit_server_config(&mut problems, spec),
        Spec::RateLimitServerSettings(spec) => crate::validate_addons::rate_limit_server_settings(&mut problems, spec),
        Spec::RateLimitClientConfig(spec) => crate::validate_addons::rate_limit_client_config(&mut problems, spec),
        Spec::RateLimitPolicy(spec) => crate::validate_addons::rate_limit_policy(&mut problems, spec),
        Spec::Role(spec) | Spec::ClusterRole(spec) => crate::rbac::validate_rules(&mut problems, spec),
        Spec::RoleBinding(spec) => crate::rbac::validate_binding(&mut problems, spec, false),
        Spec::ClusterRoleBinding(spec) => crate::rbac::validate_binding(&mut problems, spec, true),
        Spec::CorsPolicy(spec) => crate::validate_gloo_policies::cors_policy(&mut problems, spec),
        Spec::MirrorPolicy(spec) => crate::validate_gloo_policies::mirror_policy(&mut problems, spec),
        Spec::TransformationPolicy(spec) => crate::validate_transformation::transformation_policy(&mut problems, spec),
        Spec::JwtPolicy(spec) => crate::validate_gloo_policies::jwt_policy(&mut problems, spec),
        Spec::LoadBalancerPolicy(spec) => crate::validate_gloo_policies::load_balancer_policy(&mut problems, spec),
        Spec::ConnectionPolicy(spec) => crate::validate_gloo_policies::connection_policy(&mut problems, spec),
        Spec::AccessLogPolicy(spec) => crate::validate_access_log::access_log_policy(&mut problems, spec),
        // Nothing to check beyond their types; kinds not applied yet say so in their status.
        _ => {}
    }
    if problems.is_empty() { Ok(()) } else { Err(problems) }
}

fn push(problems: &mut Problems, field: impl Into<String>, message: impl Into<String>) {
    problems.push((field.into(), message.into()));
}

/// DNS-1123: lower-case letters, digits and `-` (and `.` for subdomain names).
fn check_name(problems: &mut Problems, field: &str, value: &str, max: usize, dots: bool) {
    if value.is_empty() {
        return push(problems, field, "is required");
    }
    let valid_chars = value
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || (dots && c == '.'));
    let valid_ends =
        value.starts_with(|c: char| c.is_ascii_alphanumeric()) && value.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !valid_chars || !valid_ends || value.len() > max {
        push(
            problems,
            field,
            format!(
                "{value:?} is not a valid name: use at most {max} lower-case letters, digits and '-'{}, starting and ending with a letter or digit",
                if dots { " or '.'" } else { "" }
            ),
        );
    }
}

fn is_hostname(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn check_port_number(problems: &mut Problems, field: &str, number: u32) {
    if !(1..=65535).contains(&number) {
        push(problems, field, format!("{number} is not a port: use 1 to 65535"));
    }
}

fn check_port_selector(problems: &mut Problems, field: &str, port: &PortSelector) {
    match (&port.number, &port.name) {
        (Some(number), None) => check_port_number(problems, &format!("{field}.number"), *number),
        (None, Some(name)) if !name.is_empty() => {}
        _ => push(problems, field, "give exactly one of number and name"),
    }
}

fn virtual_destination(problems: &mut Problems, spec: &VirtualDestinationSpec) {
    if spec.hosts.is_empty()
        && spec.services.is_empty()
        && spec.external_services.is_empty()
        && spec.external_workloads.is_empty()
    {
        push(
            problems,
            "spec",
            "needs at least one of hosts, services, externalServices and externalWorkloads",
        );
    }
    for (i, host) in spec.hosts.iter().enumerate() {
        if host.contains('*') {
            push(
                problems,
                format!("spec.hosts[{i}]"),
                format!("{host:?}: a VirtualDestination host cannot be a wildcard"),
            );
        } else if !is_hostname(host) {
            push(
                problems,
                format!("spec.hosts[{i}]"),
                format!("{host:?} is not a valid host name"),
            );
        }
    }
    if spec.ports.is_empty() {
        push(
            problems,
            "spec.ports",
            "at least one port is required, such as `- number: 80`",
        );
    }
    const PROTOCOLS: [&str; 7] = ["HTTP", "HTTPS", "GRPC", "HTTP2", "MONGO", "TCP", "TLS"];
    for (i, port) in spec.ports.iter().enumerate() {
        check_port_number(problems, &format!("spec.ports[{i}].number"), port.number);
        if !port.protocol.is_empty() && !PROTOCOLS.contains(&port.protocol.as_str()) {
            push(
                problems,
                format!("spec.ports[{i}].protocol"),
                format!("{:?} is not one of {}", port.protocol, PROTOCOLS.join(", ")),
            );
        }
        if let Some(target) = &port.target_port {
            check_port_selector(problems, &format!("spec.ports[{i}].targetPort"), target);
        }
    }
}

fn route_table(problems: &mut Problems, spec: &RouteTableSpec) {
    for (i, host) in spec.hosts.iter().enumerate() {
        let bare = host.strip_prefix("*.").unwrap_or(host);
        if host != "*" && !is_hostname(bare) {
            push(
                problems,
                format!("spec.hosts[{i}]"),
                format!("{host:?} is not a valid host name (only a left-most `*.` wildcard is allowed)"),
            );
        }
    }
    if let Some(mode) = &spec.failure_mode
        && !["ROUTE_REPLACEMENT", "FREEZE_CONFIG"].contains(&mode.as_str())
    {
        push(
            problems,
            "spec.failureMode",
            format!("{mode:?} is not one of ROUTE_REPLACEMENT, FREEZE_CONFIG"),
        );
    }
    // A table without hosts is a delegation child: its parent says where it is served (the
    // rules of Gloo's RouteTable CRD).
    if spec.hosts.is_empty() {
        let parent_only = [
            ("spec.virtualGateways", !spec.virtual_gateways.is_empty()),
            ("spec.applyToDestinations", !spec.apply_to_destinations.is_empty()),
            ("spec.failureMode", spec.failure_mode.is_some()),
        ];
        for (field, set) in parent_only {
            if set {
                push(
                    problems,
                    field,
                    "must be empty in a table without hosts (a delegated child table); give spec.hosts or leave this out",
                );
            }
        }
    }
    if let Some(default) = &spec.default_destination {
        destination_reference(problems, "spec.defaultDestination", default);
    }
    for (i, route) in spec.http.iter().enumerate() {
        http_route(problems, &format!("spec.http[{i}]"), route);
        let field = format!("spec.http[{i}].forwardTo.destinations");
        if route.forward_to.as_ref().is_some_and(|f| f.destinations.is_empty()) && spec.default_destination.is_none() {
            push(
                problems,
                field,
                "at least one destination is required (or set spec.defaultDestination)",
            );
        }
    }
}

fn delegate_action(problems: &mut Problems, field: &str, delegate: &DelegateAction) {
    if delegate.route_tables.is_empty() {
        push(
            problems,
            format!("{field}.routeTables"),
            "select at least one route table, such as `- labels: {table: reviews}`",
        );
    }
    for (i, filter) in delegate.allowed_routes.iter().enumerate() {
        let Some(aws) = filter.cloud_provider.as_ref().and_then(|c| c.aws.as_ref()) else {
            continue;
        };
        let lists = [("iamRoles", &aws.iam_roles), ("lambdaFunctions", &aws.lambda_functions)];
        for (name, patterns) in lists {
            for (j, pattern) in patterns.iter().enumerate() {
                check_regex(
                    problems,
                    &format!("{field}.allowedRoutes[{i}].cloudProvider.aws.{name}[{j}]"),
                    pattern,
                );
            }
        }
    }
}

fn http_route(problems: &mut Problems, field: &str, route: &HttpRoute) {
    let actions = [
        route.forward_to.is_some(),
        route.delegate.is_some(),
        route.redirect.is_some(),
        route.direct_response.is_some(),
        route.graphql.is_some(),
    ];
    if actions.iter().filter(|set| **set).count() != 1 {
        push(
            problems,
            field,
            "give exactly one action: forwardTo, delegate, redirect, directResponse or graphql",
        );
    }
    for (j, matcher) in route.matchers.iter().enumerate() {
        request_matcher(problems, &format!("{field}.matchers[{j}]"), matcher);
    }
    if let Some(delegate) = &route.delegate {
        delegate_action(problems, &format!("{field}.delegate"), delegate);
    }
    if let Some(forward) = &route.forward_to {
        for (k, destination) in forward.destinations.iter().enumerate() {
            destination_reference(problems, &format!("{field}.forwardTo.destinations[{k}]"), destination);
        }
        check_weight_sum(
            problems,
            &format!("{field}.forwardTo.destinations"),
            forward.destinations.iter().map(|d| d.weight),
        );
        if let Some(host) = &forward.host_rewrite {
            check_no_control(problems, &format!("{field}.forwardTo.hostRewrite"), host);
        }
        if let Some(rewrite) = &forward.path_rewrite {
            if !rewrite.starts_with('/') {
                push(
                    problems,
                    format!("{field}.forwardTo.pathRewrite"),
                    format!("{rewrite:?} must start with '/'"),
                );
            }
            check_no_control(problems, &format!("{field}.forwardTo.pathRewrite"), rewrite);
        }
    }
    if let Some(direct) = &route.direct_response {
        if !(200..=599).contains(&direct.status) {
            push(
                problems,
                format!("{field}.directResponse.status"),
                format!("{} is not an HTTP status: use 200 to 599", direct.status),
            );
        }
        // `RouteConfiguration.max_direct_response_body_size_bytes` defaults to 4096 and Trellis
        // leaves it so; Envoy refuses longer bodies ("response body size is N bytes; maximum is
        // 4096", source/common/router/config_utility.cc).
        if direct.body.len() > 4096 {
            push(
                problems,
                format!("{field}.directResponse.body"),
                format!("is {} bytes long: Envoy sends at most 4096", direct.body.len()),
            );
        }
    }
    if let Some(redirect) = &route.redirect {
        const CODES: [&str; 5] = [
            "MOVED_PERMANENTLY",
            "FOUND",
            "SEE_OTHER",
            "TEMPORARY_REDIRECT",
            "PERMANENT_REDIRECT",
        ];
        if let Some(code) = &redirect.response_code
            && !CODES.contains(&code.as_str())
        {
            push(
                problems,
                format!("{field}.redirect.responseCode"),
                format!("{code:?} is not one of {}", CODES.join(", ")),
            );
        }
        for (name, value) in [
            ("hostRedirect", &redirect.host_redirect),
            ("pathRedirect", &redirect.path_redirect),
        ] {
            if let Some(value) = value {
                check_no_control(problems, &format!("{field}.redirect.{name}"), value);
            }
        }
        if redirect.host_redirect.is_none() && redirect.path_redirect.is_none() {
            push(
                problems,
                format!("{field}.redirect"),
                "give hostRedirect, pathRedirect or both",
            );
        }
    }
}

fn request_matcher(problems: &mut Problems, field: &str, matcher: &RequestMatcher) {
    if let Some(uri) = &matcher.uri {
        let given = [&uri.exact, &uri.prefix, &uri.regex]
            .iter()
            .filter(|v| v.is_some())
            .count();
        if given != 1 {
            push(
                problems,
                format!("{field}.uri"),
                "give exactly one of exact, prefix and regex",
            );
        }
        for (name, value) in [("exact", &uri.exact), ("prefix", &uri.prefix)] {
            if let Some(path) = value
                && !path.starts_with('/')
            {
                push(
                    problems,
                    format!("{field}.uri.{name}"),
                    format!("{path:?} must start with '/'"),
                );
            }
        }
        if let Some(pattern) = &uri.regex {
            // Checked as Envoy gets it: the translator asks RE2 itself to ignore case.
            let compiled = if uri.ignore_case {
                format!("(?i){pattern}")
            } else {
                pattern.clone()
            };
            check_regex(problems, &format!("{field}.uri.regex"), &compiled);
        }
        for (name, value) in [("exact", &uri.exact), ("prefix", &uri.prefix)] {
            if let Some(path) = value {
                check_no_control(problems, &format!("{field}.uri.{name}"), path);
            }
        }
    }
    for (k, header) in matcher.headers.iter().enumerate() {
        check_matched_header_name(problems, &format!("{field}.headers[{k}].name"), &header.name);
        match (&header.value, header.regex) {
            (Some(pattern), true) => check_regex(problems, &format!("{field}.headers[{k}].value"), pattern),
            (None, true) => push(
                problems,
                format!("{field}.headers[{k}].value"),
                "is required when regex is true",
            ),
            _ => {}
        }
    }
    for (k, param) in matcher.query_parameters.iter().enumerate() {
        // `QueryParameterMatcher.name`: `min_len: 1, max_bytes: 1024` (route_components.proto).
        if param.name.is_empty() {
            push(problems, format!("{field}.queryParameters[{k}].name"), "is required");
        } else if param.name.len() > 1024 {
            push(
                problems,
                format!("{field}.queryParameters[{k}].name"),
                format!("is {} bytes long: Envoy allows at most 1024", param.name.len()),
            );
        }
        if let (Some(pattern), true) = (&param.value, param.regex) {
            check_regex(problems, &format!("{field}.queryParameters[{k}].value"), pattern);
        }
    }
    const METHODS: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
    ];
    if !matcher.method.is_empty() && !METHODS.contains(&matcher.method.as_str()) {
        push(
            problems,
            format!("{field}.method"),
            format!("{:?} is not one of {}", matcher.method, METHODS.join(", ")),
        );
    }
}

fn destination_reference(problems: &mut Problems, field: &str, destination: &DestinationReference) {
    if destination.reference.name.is_empty() {
        push(problems, format!("{field}.ref.name"), "is required");
    }
    if let Some(port) = &destination.port {
        check_port_selector(problems, &format!("{field}.port"), port);
    }
}

fn workspace(problems: &mut Problems, spec: &WorkspaceSpec) {
    for (i, cluster) in spec.workload_clusters.iter().enumerate() {
        let set = cluster
            .namespaces
            .iter()
            .filter(|ns| ns.config_enabled.is_some())
            .count();
        if set != 0 && set != cluster.namespaces.len() {
            push(
                problems,
                format!("spec.workloadClusters[{i}].namespaces"),
                "configEnabled is set on some namespaces: set it on all of them or none",
            );
        }
    }
}

fn workspace_settings(problems: &mut Problems, spec: &WorkspaceSettingsSpec) {
    for (field, entries) in [("importFrom", &spec.import_from), ("exportTo", &spec.export_to)] {
        for (i, entry) in entries.iter().enumerate() {
            if entry.workspaces.is_empty() {
                push(
                    problems,
                    format!("spec.{field}[{i}].workspaces"),
                    "is required: name the workspaces (`name: \"*\"` for all) or select them by label",
                );
            }
            for (j, workspace) in entry.workspaces.iter().enumerate() {
                if workspace.name.is_empty() && workspace.selector.is_empty() {
                    push(
                        problems,
                        format!("spec.{field}[{i}].workspaces[{j}]"),
                        "selects no workspace: give a name (`*` for all) or a label selector",
                    );
                }
            }
        }
    }
    let Some(federation) = spec.options.as_ref().and_then(|o| o.federation.as_ref()) else {
        return;
    };
    for (i, port) in federation.ports.iter().enumerate() {
        check_port_selector(problems, &format!("spec.options.federation.ports[{i}]"), port);
    }
    let suffix = &federation.host_suffix;
    let valid = suffix.split('.').all(|label| {
        !label.is_empty() && label.len() <= 63 && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    });
    if !suffix.is_empty() && !valid {
        push(
            problems,
            "spec.options.federation.hostSuffix",
            format!("{suffix:?} is not a DNS suffix: use labels of letters, digits and `-` joined by `.`"),
        );
    }
}

fn external_service(problems: &mut Problems, spec: &crate::ExternalServiceSpec) {
    if spec.hosts.is_empty() == spec.addresses.is_empty() {
        push(problems, "spec", "give hosts or addresses (one of the two)");
    }
    for (i, host) in spec.hosts.iter().enumerate() {
        let bare = host.strip_prefix("*.").unwrap_or(host);
        if !is_hostname(bare) {
            push(
                problems,
                format!("spec.hosts[{i}]"),
                format!("{host:?} is not a valid host name"),
            );
        }
    }
    if spec.ports.is_empty() {
        push(
            problems,
            "spec.ports",
            "at least one port is required, such as `- number: 443`",
        );
    }
    for (i, port) in spec.ports.iter().enumerate() {
        check_port_number(problems, &format!("spec.ports[{i}].number"), port.number);
        if let Some(tls) = &port.clientside_tls {
            let base = format!("spec.ports[{i}].clientsideTls");
            if !tls.mode.is_empty() && !["SIMPLE", "MUTUAL", "DISABLE"].contains(&tls.mode.as_str()) {
                push(
                    problems,
                    format!("{base}.mode"),
                    format!("{:?}: Trellis supports SIMPLE, MUTUAL and DISABLE", tls.mode),
                );
            }
            let files = (!tls.client_certificate.is_empty(), !tls.private_key.is_empty());
            if files.0 != files.1 {
                push(problems, base.clone(), "give clientCertificate and privateKey together");
            }
            if tls.mode == "MUTUAL" && !files.0 && tls.credential_name.is_empty() {
                push(
                    problems,
                    base.clone(),
                    "MUTUAL needs a client certificate: give clientCertificate and privateKey, or credentialName",
                );
            }
            if files.0 && !tls.credential_name.is_empty() {
                push(
                    problems,
                    base.clone(),
                    "give either credentialName or the certificate files, not both",
                );
            }
        }
        if let Some(routes) = &port.egress_gateway_routes {
            let field = format!("spec.ports[{i}].egressGatewayRoutes");
            check_port_number(problems, &format!("{field}.portMatch"), routes.effective_port_match());
            if routes.virtual_gateway_refs.is_empty() {
                push(
                    problems,
                    format!("{field}.virtualGatewayRefs"),
                    "name at least one egress VirtualGateway, such as `- {name: egress-gw, namespace: gateways}`",
                );
            }
            for (j, reference) in routes.virtual_gateway_refs.iter().enumerate() {
                if reference.name.is_empty() {
                    push(problems, format!("{field}.virtualGatewayRefs[{j}].name"), "required");
                }
            }
            if !spec.addresses.is_empty() {
                push(problems, field, "egress gateway routes need `hosts`, not `addresses`");
            }
        }
    }
    let mut matched = std::collections::BTreeSet::new();
    for (i, port) in spec.ports.iter().enumerate() {
        if let Some(routes) = &port.egress_gateway_routes
            && !matched.insert(routes.effective_port_match())
        {
            push(
                problems,
                format!("spec.ports[{i}].egressGatewayRoutes.portMatch"),
                format!(
                    "{} is the portMatch of an earlier port: each must be unique",
                    routes.effective_port_match()
                ),
            );
        }
    }
}

fn virtual_gateway(problems: &mut Problems, spec: &crate::VirtualGatewaySpec) {
    if spec.listeners.is_empty() {
        push(
            problems,
            "spec.listeners",
            "at least one listener is required, such as `- port: {number: 443}`",
        );
    }
    for (i, listener) in spec.listeners.iter().enumerate() {
        check_port_number(
            problems,
            &format!("spec.listeners[{i}].port.number"),
            listener.port.number,
        );
        if let Some(tls) = &listener.tls {
            gateway_tls(problems, &format!("spec.listeners[{i}].tls"), tls);
        }
        for (j, filter) in listener.exposed_external_services.iter().enumerate() {
            let host = filter.host.rsplit_once('/').map_or(filter.host.as_str(), |(_, h)| h);
            let bare = host.strip_prefix("*.").unwrap_or(host);
            if host != "*" && !is_hostname(bare) {
                push(
                    problems,
                    format!("spec.listeners[{i}].exposedExternalServices[{j}].host"),
                    format!(
                        "{:?} is not `[namespace/]host` (the host may start with `*.`)",
                        filter.host
                    ),
                );
            }
        }
    }
}

fn gateway_tls(problems: &mut Problems, field: &str, tls: &crate::gateway::GatewayTls) {
    if !tls.mode.is_empty() && !crate::gateway::GATEWAY_TLS_MODES.contains(&tls.mode.as_str()) {
        push(
            problems,
            format!("{field}.mode"),
            format!(
                "{:?}: expected one of {}",
                tls.mode,
                crate::gateway::GATEWAY_TLS_MODES.join(", ")
            ),
        );
    }
    if !tls.needs_certificate() {
        return;
    }
    let secret = tls.secret_name.as_deref().filter(|name| !name.is_empty());
    match (&tls.files, secret) {
        (None, None) => push(
            problems,
            field,
            format!(
                "{} needs a certificate: give secretName or files (serverCert, privateKey)",
                tls.effective_mode()
            ),
        ),
        (Some(_), Some(_)) => push(problems, field, "give either secretName or files, not both"),
        (None, Some(name)) => check_name(problems, &format!("{field}.secretName"), name, 253, true),
        (Some(files), None) => {
            for (name, value) in [("serverCert", &files.server_cert), ("privateKey", &files.private_key)] {
                if value.is_empty() {
                    push(problems, format!("{field}.files.{name}"), "a file path is required");
                }
            }
            if tls.effective_mode() == "MUTUAL" && files.ca_certs.as_deref().is_none_or(str::is_empty) {
                push(
                    problems,
                    format!("{field}.files.caCerts"),
                    "MUTUAL needs the CA file that client certificates must chain to",
                );
            }
        }
    }
}
