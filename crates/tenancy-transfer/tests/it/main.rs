//! Export and import against real clusters: round trips between placements, damaged and
//! forged archives, app versions, single-tenant databases imported as tenants.

mod archives;
mod legacy;
mod round_trip;
mod support;
