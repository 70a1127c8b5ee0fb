//! Export and import against real clusters: round trips between placements, damaged and
//! forged archives, app versions.

mod archives;
mod round_trip;
mod support;
