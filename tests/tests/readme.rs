//! The README's config example is a config Ebb accepts: a user who copies it
//! starts from something that loads.

use std::path::Path;

/// The first ```yaml block under the README's heading `## {heading}`.
fn yaml_block(readme: &str, heading: &str) -> String {
    let section = readme
        .split(&format!("\n## {heading}\n"))
        .nth(1)
        .unwrap_or_else(|| panic!("README has no section {heading:?}"));
    let section = section.split("\n## ").next().unwrap();
    let block = section
        .split("```yaml\n")
        .nth(1)
        .unwrap_or_else(|| panic!("README section {heading:?} has no yaml block"));
    block.split("```").next().unwrap().to_string()
}

#[test]
fn the_readmes_config_example_loads() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")).unwrap();
    let example = yaml_block(&readme, "Configure");
    let config = ebb_worker::config::from_yaml_str(Path::new("README.md"), &example, Path::new("."))
        .unwrap_or_else(|errors| panic!("the README's config example does not load:\n{errors}"));
    assert!(config.syncs.contains_key("customers-to-crm"), "{config:?}");
    assert_eq!(config.destinations.len(), 2);
}
