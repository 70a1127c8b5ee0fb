//! Integration tests of per-tenant keys: key files, and sealing, rotation and shredding
//! against real clusters (one per test process).

mod support;

mod provider;
mod rotate;
mod seal;
mod shred;
