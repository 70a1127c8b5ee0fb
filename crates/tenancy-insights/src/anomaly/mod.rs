//! Cross-tenant access anomaly detection: signals the request layer and the SDK emit,
//! per-tenant and per-credential baselines, and detections with a score, evidence and
//! a severity.
//!
//! Parts:
//! - [`AccessEvent`]: one signal — a request answered (status, whether it looked an id
//!   up, rows and bytes returned), a `tenant-mismatch` 403, a context refused inside
//!   PostgreSQL — with the credential, subject, client network and user agent as
//!   [`Fingerprint`]s.
//! - [`Detector`]: learns each tenant, credential and subject over its first
//!   [`DetectorOptions::baseline_hours`] hours, then scores every closed hour:
//!   - volume against the tenant's hour-of-week profile, the highest of the hour and the
//!     hours either side (a robust z-score, its scale the median absolute deviation of
//!     the baseline's own residuals; a clock moved by an hour is not a noisy neighbour);
//!   - 404s on id lookups, context refusals and tenant mismatches against the tenant's
//!     own rate per request (a Poisson tail bound, rates kept as decaying counts);
//!   - requests returning more rows or bytes than the tenant's 99.9th percentile, as an
//!     EWMA of their excess, so a few an hour for a day add up;
//!   - subjects reaching tenants they never used; keys used from a new network and user
//!     agent at an hour they are never used.
//!
//!   Why these statistics rather than a learned model: every figure is explainable as
//!   evidence ("41 404s this hour against 0.9 expected"), needs a few numbers per tenant
//!   (bounded memory for 100,000 tenants), learns from a week, and is robust to the
//!   outliers of the baseline itself — the median and MAD ignore a bad hour that a mean
//!   and standard deviation would absorb, the winsorised EWMA updates never learn an
//!   attack as normal, and the Poisson tail judges a tenant with ten requests a day and
//!   one with ten thousand an hour on the same footing.
//! - [`Detection`]: tenant, kind, first and last flagged hour, score (the statistic over
//!   its threshold), [`Severity`] and [`Evidence`] (signal, baseline, observed).
//! - [`AnomalyFeed`]: the detector shared by a process's threads; an
//!   [`tenancy_sdk::Observer`] for the SDK's context refusals.
//! - [`Board`]: the server side, the detections applications push
//!   ([`DetectionBatch`]), checked and kept bounded, listed by tenant, kind, severity.
//! - [`simulate`]: the evaluation harness: a generator of tenants of different sizes and
//!   rhythms with labelled attacks and benign anomalies, the batches a real-HTTP replay
//!   sends, and the scoring of alerts against the labels.
//!
//! What it does not do: it keeps no identifier in clear (fingerprints only), no series
//! per tenant beyond its 168-hour profile, and sends nothing itself.

mod board;
mod detection;
mod detector;
mod event;
mod feed;
mod model;
pub mod simulate;

pub use board::{is_subject, Anomaly, Board, DetectionBatch, Filter, Pushed, MAX_BATCH};
pub use detection::{AnomalyKind, Detection, Evidence, Severity};
pub use detector::{Detector, DetectorOptions, DetectorStats, OptionsError, Thresholds};
pub use event::{network_of, AccessEvent, AccessKind, Fingerprint};
pub use feed::{unix_now, AnomalyFeed};
pub use model::{hour_of_week, poisson_tail};
