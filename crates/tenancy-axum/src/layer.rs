//! The tower [`Layer`].

use tower_layer::Layer;

use crate::{Tenancy, TenancyService};

/// Wraps a service so every request runs for one resolved, active tenant. Build it with
/// [`Tenancy::layer`].
#[derive(Debug, Clone)]
pub struct TenancyLayer {
    /// Resolvers, catalog caches and router.
    tenancy: Tenancy,
}

impl TenancyLayer {
    /// The layer for `tenancy`.
    pub fn new(tenancy: Tenancy) -> Self {
        TenancyLayer { tenancy }
    }
}

impl<S> Layer<S> for TenancyLayer {
    type Service = TenancyService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TenancyService::new(inner, self.tenancy.clone())
    }
}
