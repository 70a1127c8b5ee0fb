//! An OpenFeature provider backed by the in-process snapshot.
//!
//! The evaluation context's targeting key is the tenant id. Flag values map to
//! OpenFeature types: JSON booleans, integers, floats, strings and objects; a type
//! mismatch is an OpenFeature `TypeMismatch` error, an unknown flag `FlagNotFound`.
//! The provider reports `STALE` while the client's snapshot is stale.

use std::collections::HashMap;

use open_feature::async_trait;
use open_feature::provider::{
    FeatureProvider, ProviderMetadata, ProviderStatus, ResolutionDetails,
};
use open_feature::{
    EvaluationContext, EvaluationError, EvaluationErrorCode, EvaluationReason, EvaluationResult,
    StructValue, Value as OfValue,
};
use serde_json::Value;
use tenancy_core::TenantId;
use time::OffsetDateTime;

use crate::client::ConfigClient;
use crate::engine::FlagReason;

/// The OpenFeature provider.
#[derive(Debug)]
pub struct TenancyProvider {
    client: ConfigClient,
    metadata: ProviderMetadata,
}

impl TenancyProvider {
    /// A provider evaluating with `client`.
    pub fn new(client: ConfigClient) -> TenancyProvider {
        TenancyProvider {
            client,
            metadata: ProviderMetadata::new("tenancy"),
        }
    }

    fn resolve<T>(
        &self,
        key: &str,
        ctx: &EvaluationContext,
        convert: impl FnOnce(&Value) -> Option<T>,
    ) -> EvaluationResult<ResolutionDetails<T>> {
        let tenant: TenantId = ctx
            .targeting_key
            .as_deref()
            .ok_or_else(|| {
                error(
                    EvaluationErrorCode::TargetingKeyMissing,
                    "the targeting key must be the tenant id",
                )
            })?
            .parse()
            .map_err(|e: tenancy_core::IdError| {
                error(EvaluationErrorCode::InvalidContext, &e.to_string())
            })?;
        let snap = self.client.snapshot();
        let e = snap
            .flag(tenant, key, OffsetDateTime::now_utc())
            .ok_or_else(|| {
                error(
                    EvaluationErrorCode::FlagNotFound,
                    &format!("no flag named {key:?}"),
                )
            })?;
        let value = convert(e.value).ok_or_else(|| {
            error(
                EvaluationErrorCode::TypeMismatch,
                &format!("flag {key:?} has value {} of another type", e.value),
            )
        })?;
        let reason = match e.reason {
            FlagReason::KillSwitch => EvaluationReason::Disabled,
            FlagReason::Rule {
                bucket: Some(_), ..
            } => EvaluationReason::Split,
            FlagReason::Rule { .. }
            | FlagReason::Override
            | FlagReason::Plan
            | FlagReason::Region => EvaluationReason::TargetingMatch,
            FlagReason::Default | FlagReason::UnknownTenant => EvaluationReason::Default,
        };
        Ok(ResolutionDetails {
            value,
            variant: Some(e.variant.to_string()),
            reason: Some(reason),
            flag_metadata: None,
        })
    }
}

fn error(code: EvaluationErrorCode, msg: &str) -> EvaluationError {
    EvaluationError {
        code,
        message: Some(msg.to_owned()),
    }
}

fn to_of(v: &Value) -> Option<OfValue> {
    Some(match v {
        Value::Bool(b) => OfValue::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => OfValue::Int(i),
            None => OfValue::Float(n.as_f64()?),
        },
        Value::String(s) => OfValue::String(s.clone()),
        Value::Array(a) => OfValue::Array(a.iter().map(to_of).collect::<Option<Vec<_>>>()?),
        Value::Object(o) => OfValue::Struct(StructValue {
            fields: o
                .iter()
                .map(|(k, v)| Some((k.clone(), to_of(v)?)))
                .collect::<Option<HashMap<_, _>>>()?,
        }),
        Value::Null => return None,
    })
}

#[async_trait]
impl FeatureProvider for TenancyProvider {
    fn metadata(&self) -> &ProviderMetadata {
        &self.metadata
    }

    fn status(&self) -> ProviderStatus {
        if self.client.status().stale {
            ProviderStatus::STALE
        } else {
            ProviderStatus::Ready
        }
    }

    async fn resolve_bool_value(
        &self,
        key: &str,
        ctx: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<bool>> {
        self.resolve(key, ctx, Value::as_bool)
    }

    async fn resolve_int_value(
        &self,
        key: &str,
        ctx: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<i64>> {
        self.resolve(key, ctx, Value::as_i64)
    }

    async fn resolve_float_value(
        &self,
        key: &str,
        ctx: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<f64>> {
        self.resolve(key, ctx, Value::as_f64)
    }

    async fn resolve_string_value(
        &self,
        key: &str,
        ctx: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<String>> {
        self.resolve(key, ctx, |v| v.as_str().map(str::to_owned))
    }

    async fn resolve_struct_value(
        &self,
        key: &str,
        ctx: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<StructValue>> {
        self.resolve(key, ctx, |v| match to_of(v)? {
            OfValue::Struct(s) => Some(s),
            _ => None,
        })
    }
}
