//! Every destination type, and the one table that names them.
//!
//! A connector is a type implementing [`Connector`]: its settings struct, what
//! it declares about a configured destination, and how it opens. The registry
//! erases the types so the config loader (through `DestinationTypes`), the
//! coordinator and the worker can reach every connector by its `type` name.

use super::{braze, http, http_request, hubspot, jsonl, meta, postgres, salesforce, Destination, Field};
use crate::error::TaskError;
use ebb_shared::config::{
    read_settings, settings_map, DestinationConfig, DestinationProfile, DestinationTypes, FieldError, SyncSpec,
};
use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::future::Future;
use std::marker::PhantomData;
use std::path::Path;
use std::sync::Arc;

/// One kind of destination.
pub trait Connector: 'static {
    /// The `type` users write in a destination block.
    const TYPE: &'static str;

    /// Its settings: `#[serde(deny_unknown_fields)]`, with defaults filled in
    /// on reading, so that what a config loaded is what every worker sees.
    type Config: Serialize + DeserializeOwned + Send + Sync;

    /// Makes relative paths absolute, when the settings have any.
    fn resolve_paths(config: Self::Config, base_dir: &Path) -> Self::Config {
        let _ = base_dir;
        config
    }

    /// What this destination can do and may take; an error for what serde
    /// cannot check (bounds, combinations of settings, limits above the
    /// documented ones), named by its field.
    fn profile(config: &Self::Config) -> Result<DestinationProfile, FieldError>;

    /// Reaches the destination without changing anything in it (`ebb
    /// destination test`): credentials, the object or list the settings name.
    fn test_connection(config: Self::Config, name: &str) -> impl Future<Output = Result<(), String>> + Send;

    /// The fields records of `object` (the configured one when `None`) may
    /// have, when the destination can say; `None` when it takes any field.
    fn fields(
        config: Self::Config,
        name: &str,
        object: Option<&str>,
    ) -> impl Future<Output = Result<Option<Vec<Field>>, String>> + Send {
        let _ = (config, name, object);
        async { Ok(None) }
    }

    /// The service that sends a sync's batches.
    fn open(
        config: Self::Config,
        spec: &SyncSpec,
    ) -> impl Future<Output = Result<Arc<dyn Destination>, TaskError>> + Send;
}

/// The registered connectors: adding a destination adds one line here.
pub static REGISTRY: Registry = Registry(&[
    &Registered::<http::Http>(PhantomData),
    &Registered::<http_request::HttpRequest>(PhantomData),
    &Registered::<postgres::Postgres>(PhantomData),
    &Registered::<jsonl::Jsonl>(PhantomData),
    &Registered::<hubspot::HubSpot>(PhantomData),
    &Registered::<salesforce::Salesforce>(PhantomData),
    &Registered::<braze::Braze>(PhantomData),
    &Registered::<meta::Meta>(PhantomData),
]);

pub struct Registry(&'static [&'static dyn AnyConnector]);

impl Registry {
    fn connector(&self, kind: &str) -> Result<&'static dyn AnyConnector, String> {
        self.0.iter().copied().find(|c| c.kind() == kind).ok_or_else(|| {
            format!(
                "unknown destination type {kind:?}; this Ebb has: {}",
                self.names().join(", ")
            )
        })
    }

    /// Opens a sync's destination.
    pub async fn open(&self, spec: &SyncSpec) -> Result<Arc<dyn Destination>, TaskError> {
        let setup = |reason: String| TaskError::DestinationSetup {
            destination: spec.destination_name.clone(),
            reason,
        };
        let connector = self.connector(&spec.destination.kind).map_err(setup)?;
        connector.open(spec).await
    }
}

impl Registry {
    /// `Connector::test_connection` of a configured destination.
    pub async fn test_connection(&self, name: &str, destination: &DestinationConfig) -> Result<(), String> {
        self.connector(&destination.kind)?
            .test_connection(name, destination)
            .await
    }

    /// `Connector::fields` of a configured destination.
    pub async fn fields(
        &self,
        name: &str,
        destination: &DestinationConfig,
        object: Option<&str>,
    ) -> Result<Option<Vec<Field>>, String> {
        self.connector(&destination.kind)?
            .fields(name, destination, object)
            .await
    }
}

impl DestinationTypes for Registry {
    fn names(&self) -> Vec<&'static str> {
        self.0.iter().map(|c| c.kind()).collect()
    }

    fn read(
        &self,
        kind: &str,
        settings: serde_yaml::Value,
        base_dir: &Path,
    ) -> Option<Result<serde_json::Map<String, serde_json::Value>, FieldError>> {
        let connector = self.connector(kind).ok()?;
        Some(connector.read(settings, base_dir))
    }

    fn profile(&self, destination: &DestinationConfig) -> Result<DestinationProfile, String> {
        self.connector(&destination.kind)?.profile(destination)
    }
}

/// The declarations of a configured destination (see [`Connector::profile`]).
pub fn profile(destination: &DestinationConfig) -> Result<DestinationProfile, String> {
    REGISTRY.profile(destination)
}

/// A connector with its types erased.
trait AnyConnector: Sync {
    fn kind(&self) -> &'static str;
    fn read(
        &self,
        settings: serde_yaml::Value,
        base_dir: &Path,
    ) -> Result<serde_json::Map<String, serde_json::Value>, FieldError>;
    fn profile(&self, destination: &DestinationConfig) -> Result<DestinationProfile, String>;
    fn open<'a>(&self, spec: &'a SyncSpec) -> BoxFuture<'a, Result<Arc<dyn Destination>, TaskError>>;
    fn test_connection<'a>(
        &self,
        name: &'a str,
        destination: &'a DestinationConfig,
    ) -> BoxFuture<'a, Result<(), String>>;
    fn fields<'a>(
        &self,
        name: &'a str,
        destination: &'a DestinationConfig,
        object: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Option<Vec<Field>>, String>>;
}

struct Registered<C>(PhantomData<fn() -> C>);

impl<C: Connector> AnyConnector for Registered<C> {
    fn kind(&self) -> &'static str {
        C::TYPE
    }

    fn read(
        &self,
        settings: serde_yaml::Value,
        base_dir: &Path,
    ) -> Result<serde_json::Map<String, serde_json::Value>, FieldError> {
        let config = C::resolve_paths(read_settings::<C::Config>(settings)?, base_dir);
        C::profile(&config)?;
        Ok(settings_map(&config))
    }

    fn profile(&self, destination: &DestinationConfig) -> Result<DestinationProfile, String> {
        C::profile(&destination.settings_as::<C::Config>()?).map_err(|e| e.message().to_string())
    }

    fn open<'a>(&self, spec: &'a SyncSpec) -> BoxFuture<'a, Result<Arc<dyn Destination>, TaskError>> {
        Box::pin(async move {
            let config = spec
                .destination
                .settings_as::<C::Config>()
                .map_err(|reason| TaskError::DestinationSetup {
                    destination: spec.destination_name.clone(),
                    reason,
                })?;
            C::open(config, spec).await
        })
    }

    fn test_connection<'a>(
        &self,
        name: &'a str,
        destination: &'a DestinationConfig,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move { C::test_connection(destination.settings_as::<C::Config>()?, name).await })
    }

    fn fields<'a>(
        &self,
        name: &'a str,
        destination: &'a DestinationConfig,
        object: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Option<Vec<Field>>, String>> {
        Box::pin(async move { C::fields(destination.settings_as::<C::Config>()?, name, object).await })
    }
}
