//! Unit tests of the pure engine: every rule type, rollouts, the layer hierarchy,
//! explanations and override expiry. Shared builders here; [`rules`] tests targeting
//! and rollouts, [`layers`] the hierarchy, explanations and targeted updates.

use std::collections::BTreeMap;

use serde_json::json;
use tenancy_core::{Placement, TenantId};
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

use super::*;
use crate::model::*;

fn now() -> OffsetDateTime {
    datetime!(2026-03-01 12:00 UTC)
}

fn tenant(plan: &str, region: &str, placement: Placement) -> TenantData {
    TenantData {
        attributes: TenantAttributes {
            id: TenantId::new_random(),
            plan: plan.parse().expect("plan"),
            region: region.parse().expect("region"),
            placement,
            created_at: datetime!(2025-06-01 00:00 UTC),
            tags: vec!["beta".into(), "eu".into()],
            custom: serde_json::from_value(
                json!({"employees": 250, "industry": "fintech", "labels": ["a", "b"]}),
            )
            .expect("custom"),
        },
        overrides: Vec::new(),
        settings: BTreeMap::new(),
        branding: None,
        domains: Vec::new(),
    }
}

fn flag_with(rule: Vec<Condition>) -> Flag {
    let mut f = Flag::boolean("f".parse().expect("key"));
    f.rules.push(Rule {
        name: "r".into(),
        conditions: rule,
        serve: Serve::Variant {
            variant: "on".parse().expect("v"),
        },
    });
    f
}

fn snap_with(flags: Vec<Flag>, tenants: Vec<TenantData>) -> Snapshot {
    Snapshot::build(ConfigData {
        flags,
        tenants,
        ..Default::default()
    })
}

fn set(op: SetOp) -> SetOp {
    op
}

mod layers;
mod rules;
