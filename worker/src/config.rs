//! The config loader, with every destination connector of this build: what
//! the coordinator, the CLI and the tests load configs with.

use crate::destinations::REGISTRY;
use ebb_shared::config::{Config, ConfigErrors, Locations};
use std::path::Path;

/// One YAML file, or every `*.yaml` / `*.yml` file of a directory.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    Config::load(path, &REGISTRY)
}

/// `load`, and where each item and key was written.
pub fn load_located(path: &Path) -> Result<(Config, Locations), ConfigErrors> {
    Config::load_located(path, &REGISTRY)
}

/// One YAML document, as if it were a file named `name` in `base_dir`.
pub fn from_yaml_str(name: &Path, text: &str, base_dir: &Path) -> Result<Config, ConfigErrors> {
    Config::from_yaml_str(name, text, base_dir, &REGISTRY)
}
