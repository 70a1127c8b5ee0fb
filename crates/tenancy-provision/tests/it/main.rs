//! Integration tests of the provisioning engine against real private clusters: every
//! placement end to end, lifecycle workflows, crashes injected at every step, failing
//! registration receivers with compensation, and two regions on two clusters.

mod faults;
mod lifecycle;
mod moves;
mod regions;
mod storage;
mod support;
mod warm_pool;
