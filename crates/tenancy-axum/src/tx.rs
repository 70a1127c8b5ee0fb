//! The per-request (and per-job) `TenantTx`: opened on first use by the [`Tx`]
//! extractor (a later extraction gets the same transaction once the earlier holder has
//! dropped it, so a guard and the handler share it), handed back when the handler is done, then committed by the layer if the
//! response is a success and rolled back otherwise (error status, error, panic).

use std::future::{ready, Ready};
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex};

use axum::extract::FromRequestParts;
use futures_util::future::{BoxFuture, Either};
use http::request::Parts;
use tenancy_sdk::TenantTx;

use crate::{HttpError, Tenancy, Tenant};

#[derive(Debug, Default)]
struct SlotState {
    /// The transaction, while nobody holds it.
    tx: Option<TenantTx>,
    /// Whether it was opened (only once per request).
    opened: bool,
}

/// The end of a request's transaction: ready at once, or a boxed wait for the server.
pub(crate) type Finish =
    Either<Ready<Result<(), HttpError>>, BoxFuture<'static, Result<(), HttpError>>>;

/// Where a request's transaction lives between the extractor and the layer.
#[derive(Debug, Clone)]
pub(crate) struct TxSlot {
    /// Shared with the [`Tx`] handed to the handler.
    state: Arc<Mutex<SlotState>>,
    /// Opens the transaction.
    tenancy: Tenancy,
    /// For whom.
    tenant: Tenant,
    /// Open it read-only (a safe HTTP method).
    read_only: bool,
}

impl TxSlot {
    pub(crate) fn new(tenancy: Tenancy, tenant: Tenant, read_only: bool) -> Self {
        TxSlot {
            state: Arc::default(),
            tenancy,
            tenant,
            read_only,
        }
    }

    pub(crate) async fn open(&self) -> Result<Tx, HttpError> {
        {
            let mut s = self
                .state
                .lock()
                .map_err(|_| HttpError::internal("transaction slot poisoned"))?;
            if s.opened {
                // Handed back by an earlier holder (a guard that checked permissions in
                // it): the same transaction again. Held by someone: a wiring bug.
                return match s.tx.take() {
                    Some(tx) => Ok(Tx {
                        tx: Some(tx),
                        slot: Arc::clone(&self.state),
                    }),
                    None => Err(HttpError::internal(
                        "the tenant transaction was extracted twice in one request",
                    )),
                };
            }
            s.opened = true;
        }
        let tx = if self.read_only {
            self.tenancy.begin_read_only(&self.tenant).await?
        } else {
            self.tenancy.begin(&self.tenant).await?
        };
        Ok(Tx {
            tx: Some(tx),
            slot: Arc::clone(&self.state),
        })
    }

    /// Commits (`commit == true`) or rolls back the transaction if one was opened and
    /// handed back. Ready at once when that needs no round trip (nothing opened, or a
    /// read-only transaction); the wait for a COMMIT or ROLLBACK is boxed, so the future
    /// the layer keeps for every request stays small.
    pub(crate) fn finish(&self, commit: bool) -> Finish {
        let tx = match self.state.lock() {
            Ok(mut s) => s.tx.take(),
            Err(_) => None,
        };
        let Some(mut tx) = tx else {
            return Either::Left(ready(Ok(())));
        };
        match tx.end_without_round_trip(commit) {
            Some(done) => Either::Left(ready(done.map_err(HttpError::from))),
            None => Either::Right(Box::pin(async move {
                if commit {
                    tx.commit().await.map_err(HttpError::from)
                } else {
                    tx.rollback().await.map_err(HttpError::from)
                }
            })),
        }
    }
}

/// The request's tenant transaction. Use it like a [`TenantTx`] (it dereferences to
/// one); do not commit it: the layer commits when the handler returns a success
/// response and rolls back on an error response, an error or a panic.
#[derive(Debug)]
pub struct Tx {
    /// Always `Some` until dropped.
    tx: Option<TenantTx>,
    /// Where the transaction goes back on drop.
    slot: Arc<Mutex<SlotState>>,
}

impl Deref for Tx {
    type Target = TenantTx;
    fn deref(&self) -> &TenantTx {
        match &self.tx {
            Some(tx) => tx,
            None => unreachable!("Tx holds its transaction until it is dropped"),
        }
    }
}

impl DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut TenantTx {
        match &mut self.tx {
            Some(tx) => tx,
            None => unreachable!("Tx holds its transaction until it is dropped"),
        }
    }
}

impl Drop for Tx {
    fn drop(&mut self) {
        // Hand the transaction back for the layer to end. If the slot is gone or
        // poisoned, dropping the TenantTx rolls it back.
        if let Some(tx) = self.tx.take() {
            if let Ok(mut s) = self.slot.lock() {
                s.tx = Some(tx);
            }
        }
    }
}

/// Marks a request the layer served as a public route: it was not authenticated.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PublicRoute;

/// Why there is no tenant in `parts`: a public route (the caller was not authenticated:
/// 401) or no tenancy layer in front of the handler (a wiring bug: 500).
fn no_tenant(parts: &Parts, what: &str) -> HttpError {
    if parts.extensions.get::<PublicRoute>().is_some() {
        tracing::error!(
            path = %parts.uri.path(),
            "a handler of a route declared public asked for the {what}; refused"
        );
        HttpError::Unauthenticated
    } else {
        HttpError::internal(format!("the {what} extractor needs the tenancy layer"))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Tx {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, HttpError> {
        let Some(slot) = parts.extensions.get::<TxSlot>().cloned() else {
            return Err(no_tenant(parts, "Tx"));
        };
        slot.open().await
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Tenant {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, HttpError> {
        // The request's tenant travels in its transaction slot: one extension fewer.
        parts
            .extensions
            .get::<TxSlot>()
            .map(|slot| slot.tenant.clone())
            .ok_or_else(|| no_tenant(parts, "Tenant"))
    }
}
