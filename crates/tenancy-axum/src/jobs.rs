//! The request layer's side of jobs: [`Tenancy`] is a [`JobRuntime`], so a job handler
//! gets the same [`Tenant`] (checked: exists, active; [`Tenant::current`] set) and [`Tx`]
//! (committed when the handler returns `Ok`) a request handler gets.

use std::future::Future;
use std::sync::Arc;

use tenancy_core::TenantId;
use tenancy_jobs::{BoxError, JobRuntime, TenantUnavailable};
use uuid::Uuid;

use crate::tenant::Via;
use crate::tx::TxSlot;
use crate::{HttpError, SourceKind, Tenancy, Tenant, Tx};

/// What the worker keeps to end a job's transaction: the slot the job's [`Tx`] goes back
/// to when the handler drops it.
#[derive(Debug)]
pub struct JobEnding(TxSlot);

impl JobRuntime for Tenancy {
    type Tenant = Tenant;
    type Tx = Tx;
    type Ending = JobEnding;

    async fn check(&self, tenant: TenantId, job: Uuid) -> Result<Tenant, TenantUnavailable> {
        let subject = Some(Arc::from(format!("job:{job}")));
        match self
            .checked(tenant, Via::one(SourceKind::Job), subject, None, None)
            .await
        {
            Ok(t) => Ok(t),
            Err(HttpError::TenantNotFound) | Err(HttpError::TenantDeleted) => {
                Err(TenantUnavailable::Gone)
            }
            Err(e) => Err(TenantUnavailable::NotNow(Box::new(e))),
        }
    }

    async fn open(&self, tenant: &Tenant) -> Result<(Tx, JobEnding), BoxError> {
        let slot = TxSlot::new(self.clone(), tenant.clone(), false);
        let tx = slot.open().await?;
        Ok((tx, JobEnding(slot)))
    }

    fn scope<F: Future + Send>(
        &self,
        tenant: &Tenant,
        fut: F,
    ) -> impl Future<Output = F::Output> + Send {
        tenant.clone().scope(fut)
    }

    async fn end(&self, ending: JobEnding, commit: bool) -> Result<(), BoxError> {
        ending.0.finish(commit).await.map_err(BoxError::from)
    }
}
