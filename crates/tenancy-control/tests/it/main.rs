//! Integration tests of the control plane: the router without a socket, against a real
//! private cluster; the OpenAPI document validated against the OAS 3.1 meta-schema
//! (tests/data/oas-3.1-schema.json, from the PyPI package openapi-spec-validator 0.9.0,
//! resources/schemas/v3.1/schema.json).

mod access;
mod anomalies;
mod anomaly_events;
mod api;
mod audit;
mod config;
mod config_routes;
mod console;
mod console_edit;
mod export;
mod hostile;
mod ops;
mod report;
mod residency;
mod tls;
mod validation;
