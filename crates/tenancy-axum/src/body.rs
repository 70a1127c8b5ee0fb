//! [`Body`]: a handler's JSON body whose every rejection is a problem document.

use axum::extract::{FromRequest, Request};
use axum::Json;
use serde::de::DeserializeOwned;

use crate::HttpError;

/// A JSON request body of type `T`. A body that cannot be read or is not a `T` (unknown
/// fields included, where `T` denies them) is a 400 `bad-request` problem saying why,
/// never axum's plain-text rejection.
#[derive(Debug, Clone)]
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = HttpError;

    async fn from_request(req: Request, state: &S) -> Result<Self, HttpError> {
        Json::<T>::from_request(req, state)
            .await
            .map(|Json(v)| Body(v))
            .map_err(|e| HttpError::BadRequest(e.body_text()))
    }
}
