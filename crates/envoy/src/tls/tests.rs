use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;

use super::*;

fn inline_text(source: &Option<DataSource>) -> &str {
    match source.as_ref().and_then(|s| s.specifier.as_ref()) {
        Some(Specifier::InlineString(text)) => text,
        other => panic!("expected an inline string, got {other:?}"),
    }
}

#[test]
fn secrets_are_the_workload_certificate_then_the_root_ca() {
    let secrets = secrets("CHAIN", "KEY", "ROOT");
    let names: Vec<_> = secrets.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["default", "ROOTCA"]);

    let Some(secret::Type::TlsCertificate(cert)) = &secrets[0].r#type else {
        panic!("expected a TLS certificate, got {:?}", secrets[0].r#type);
    };
    assert_eq!(inline_text(&cert.certificate_chain), "CHAIN");
    assert_eq!(inline_text(&cert.private_key), "KEY");

    let Some(secret::Type::ValidationContext(validation)) = &secrets[1].r#type else {
        panic!("expected a validation context, got {:?}", secrets[1].r#type);
    };
    assert_eq!(inline_text(&validation.trusted_ca), "ROOT");
    assert!(validation.match_typed_subject_alt_names.is_empty());
}

#[test]
fn secrets_go_out_as_sds_resources_after_everything_else() {
    let resources = crate::ProxyResources {
        secrets: secrets("CHAIN", "KEY", "ROOT"),
        ..crate::testing::sidecar_resources()
    };
    let typed = resources.into_typed();
    let tail: Vec<_> = typed[typed.len() - 2..]
        .iter()
        .map(|(t, name, any)| {
            assert_eq!(*t, any.type_url);
            (*t, name.as_str())
        })
        .collect();
    assert_eq!(
        tail,
        [
            (crate::SECRET_TYPE, WORKLOAD_SECRET),
            (crate::SECRET_TYPE, ROOT_CA_SECRET)
        ]
    );
    let secret_count = typed.iter().filter(|(t, _, _)| *t == crate::SECRET_TYPE).count();
    assert_eq!(secret_count, 2);
}
