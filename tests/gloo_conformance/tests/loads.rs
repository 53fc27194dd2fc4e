//! Every documented Gloo example must load as Gloo loads it: through the same parsing and
//! validation an apply goes through (`trellis_api::parse_documents`), and, for ExtAuthPolicies,
//! the auth config compiled as apply-time admission compiles it. A failure lists every problem
//! found, each with its file, document, `Kind/namespace/name`, field and message.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn examples() -> Vec<PathBuf> {
    let dir = trellis_gloo_conformance::examples_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    files
}

fn name(path: &Path) -> String {
    path.file_name().expect("file name").to_string_lossy().into_owned()
}

/// What apply-time admission adds to parsing: every ExtAuthPolicy's auth config, with the
/// Secrets and ConfigMaps of the same file resolved, must compile in the ext-auth engine.
fn auth_config_problems(file: &str, resources: Vec<trellis_api::Resource>) -> Vec<String> {
    let snapshot = trellis_model::Snapshot::new(resources, BTreeMap::new());
    trellis_translate::auth_configs(&snapshot)
        .into_iter()
        .filter_map(|entry| {
            trellis_extauth::CompiledAuthConfig::compile(&entry.id, &entry.spec)
                .err()
                .map(|error| {
                    format!(
                        "{file}: ExtAuthPolicy {}: field spec.config.glooAuth: {error}",
                        entry.id
                    )
                })
        })
        .collect()
}

#[test]
fn every_documented_example_is_accepted() {
    let files = examples();
    assert!(!files.is_empty(), "no examples found");
    let mut failures = Vec::new();
    for path in &files {
        let file = name(path);
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {file}: {e}"));
        match trellis_api::parse_documents(&file, &text) {
            Ok(resources) => failures.extend(auth_config_problems(&file, resources)),
            Err(error) => failures.extend(error.errors().iter().map(ToString::to_string)),
        }
    }
    let failed_files: std::collections::BTreeSet<&str> = failures.iter().filter_map(|f| f.split(':').next()).collect();
    assert!(
        failures.is_empty(),
        "{} of {} example files are refused ({} problems):\n{}",
        failed_files.len(),
        files.len(),
        failures.len(),
        failures.join("\n")
    );
}

/// Each example says where it comes from and what the guide says it does, so a reader can check
/// the file against the guide and an end-to-end test knows what to prove.
#[test]
fn every_example_names_its_guide_and_purpose() {
    for path in examples() {
        let file = name(&path);
        let text = std::fs::read_to_string(&path).expect("readable example");
        let mut lines = text.lines();
        let source = lines.next().unwrap_or_default();
        assert!(
            source.starts_with("# Source: https://docs.solo.io/"),
            "{file}: the first line must be `# Source: <docs.solo.io URL>`, found {source:?}"
        );
        let purpose = lines.next().unwrap_or_default();
        assert!(
            purpose.starts_with("# ") && purpose.len() > 10,
            "{file}: the second line must say what the guide says the example does, found {purpose:?}"
        );
    }
}

/// The suite is the executable form of the compatibility page only if every example also runs
/// end to end: each file must be named (as `"<file>"`) by one of the `behaves/` checks.
#[test]
fn every_example_is_run_end_to_end() {
    let behaves = Path::new(env!("CARGO_MANIFEST_DIR")).join("behaves");
    let checks: String = std::fs::read_dir(&behaves)
        .unwrap_or_else(|e| panic!("reading {}: {e}", behaves.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "rs"))
        .map(|path| std::fs::read_to_string(&path).expect("readable check"))
        .collect();
    let unchecked: Vec<String> = examples()
        .iter()
        .map(|path| name(path))
        .filter(|file| !checks.contains(&format!("\"{file}\"")))
        .collect();
    assert!(
        unchecked.is_empty(),
        "{} examples are not run by any check in behaves/: {unchecked:?}",
        unchecked.len()
    );
}
