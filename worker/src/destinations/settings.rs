//! The delivery settings every destination block may carry (`batch_size`,
//! `rate_limit`, `max_concurrency`), checked against what the connector
//! declares: users can lower a vendor's documented limits, never raise them.

use ebb_shared::config::{BatchLimits, DeliveryLimits, FieldError};

/// The most requests per second any destination is given: a guard against a
/// typo like `rate_limit: 1e10`, far above any API's limit.
pub const MAX_RATE_LIMIT: f64 = 100_000.0;
/// The most requests in flight any destination is given.
pub const MAX_CONCURRENCY: u32 = 10_000;

/// What a connector says its vendor allows, and what it uses by default.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Documented {
    /// The vendor's request limit, fleet-wide; `None` where there is none.
    pub rate_limit: Option<f64>,
    /// The window the vendor counts that limit over, when it documents one.
    pub rate_window: Option<std::time::Duration>,
    /// The vendor's limit on requests in flight.
    pub max_concurrency: Option<u32>,
    /// The most a request may carry.
    pub batch: BatchLimits,
    /// Records per request when the user says nothing.
    pub default_batch_size: usize,
}

/// The user's settings of a destination block.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Requested {
    pub batch_size: Option<usize>,
    pub rate_limit: Option<f64>,
    pub max_concurrency: Option<u32>,
}

/// Checks a URL setting (an API base, an instance URL): it parses and is
/// http or https. A value still holding a `${VAR}` is checked when the
/// worker expands it.
pub fn check_url(value: &str, field: &str) -> Result<(), FieldError> {
    if value.contains("${") {
        return Ok(());
    }
    let url =
        reqwest::Url::parse(value).map_err(|e| FieldError::at(&[field], format!("`{field}` is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(FieldError::at(
            &[field],
            format!("`{field}` must be http:// or https://"),
        ));
    }
    Ok(())
}

/// The limits that hold, or the first setting that is out of bounds.
pub fn apply(documented: &Documented, requested: Requested) -> Result<(DeliveryLimits, BatchLimits), FieldError> {
    if let Some(rate) = requested.rate_limit {
        if !(rate > 0.0 && rate.is_finite() && rate <= MAX_RATE_LIMIT) {
            return Err(FieldError::at(
                &["rate_limit"],
                format!("`rate_limit` must be a number of requests per second above 0 and at most {MAX_RATE_LIMIT}, not {rate}"),
            ));
        }
        if let Some(vendor) = documented.rate_limit.filter(|vendor| rate > *vendor) {
            return Err(FieldError::at(
                &["rate_limit"],
                format!("`rate_limit` {rate} is above the destination's documented limit of {vendor} requests per second; leave it out to use that limit, or lower it"),
            ));
        }
    }
    if let Some(concurrency) = requested.max_concurrency {
        if concurrency == 0 || concurrency > MAX_CONCURRENCY {
            return Err(FieldError::at(
                &["max_concurrency"],
                format!("`max_concurrency` must be between 1 and {MAX_CONCURRENCY}, not {concurrency}"),
            ));
        }
        if let Some(vendor) = documented.max_concurrency.filter(|vendor| concurrency > *vendor) {
            return Err(FieldError::at(
                &["max_concurrency"],
                format!("`max_concurrency` {concurrency} is above the destination's documented limit of {vendor} requests in flight"),
            ));
        }
    }
    let records = requested.batch_size.unwrap_or(documented.default_batch_size);
    if records == 0 {
        return Err(FieldError::at(&["batch_size"], "`batch_size` must be at least 1"));
    }
    if records > documented.batch.records {
        return Err(FieldError::at(
            &["batch_size"],
            format!(
                "`batch_size` {records} is above the {} records the destination takes in one request",
                documented.batch.records
            ),
        ));
    }
    let limits = DeliveryLimits {
        rate_limit: requested.rate_limit.or(documented.rate_limit),
        // A lowered rate is counted over the vendor's window all the same.
        rate_window: documented.rate_window,
        max_concurrency: requested.max_concurrency.or(documented.max_concurrency),
    };
    let batch = BatchLimits {
        records,
        bytes: documented.batch.bytes,
    };
    Ok((limits, batch))
}

#[cfg(test)]
mod tests {
    use super::*;

    const VENDOR: Documented = Documented {
        rate_limit: Some(10.0),
        rate_window: None,
        max_concurrency: None,
        batch: BatchLimits {
            records: 100,
            bytes: 1_000_000,
        },
        default_batch_size: 100,
    };

    #[test]
    fn users_lower_limits_never_raise_them() {
        let (limits, batch) = apply(&VENDOR, Requested::default()).unwrap();
        assert_eq!((limits.rate_limit, batch.records), (Some(10.0), 100));
        let lowered = Requested {
            batch_size: Some(20),
            rate_limit: Some(2.5),
            max_concurrency: Some(3),
        };
        let (limits, batch) = apply(&VENDOR, lowered).unwrap();
        assert_eq!(
            (limits.rate_limit, limits.max_concurrency, batch.records, batch.bytes),
            (Some(2.5), Some(3), 20, 1_000_000)
        );
        for (requested, field) in [
            (
                Requested {
                    rate_limit: Some(11.0),
                    ..Requested::default()
                },
                "rate_limit",
            ),
            (
                Requested {
                    rate_limit: Some(1e10),
                    ..Requested::default()
                },
                "rate_limit",
            ),
            (
                Requested {
                    rate_limit: Some(f64::NAN),
                    ..Requested::default()
                },
                "rate_limit",
            ),
            (
                Requested {
                    batch_size: Some(101),
                    ..Requested::default()
                },
                "batch_size",
            ),
            (
                Requested {
                    batch_size: Some(0),
                    ..Requested::default()
                },
                "batch_size",
            ),
            (
                Requested {
                    max_concurrency: Some(0),
                    ..Requested::default()
                },
                "max_concurrency",
            ),
        ] {
            let error = apply(&VENDOR, requested).unwrap_err();
            assert!(error.message().contains(field), "{requested:?}: {}", error.message());
        }
    }
}
