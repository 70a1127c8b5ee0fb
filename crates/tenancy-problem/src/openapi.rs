//! The error responses of an OpenAPI document, completed from each operation's shape.
//!
//! Whatever a handler documents itself, the server can also answer: 400 when a query
//! string, header or body cannot be read; 422 when its content is invalid; 413 and 415
//! for a body too large or not JSON; 404 for a path naming nothing; 401 when the
//! operation needs a credential. [`document_errors`] adds those that an operation does
//! not list yet (each a [`Problem`](crate::Problem) document) and gives every response
//! without a description the reason phrase of its status.

use utoipa::openapi::path::{Operation, ParameterIn, PathItem};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr, ResponseBuilder};
use utoipa::PartialSchema;

use crate::CONTENT_TYPE;

/// A response carrying a problem document, described by `description`.
pub fn problem_response(description: &str) -> RefOr<utoipa::openapi::Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                CONTENT_TYPE,
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Problem")))
                    .build(),
            )
            .build(),
    )
}

/// Every operation of a path, whatever its method.
pub fn operations_mut(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.patch,
        &mut item.head,
        &mut item.options,
        &mut item.trace,
    ]
    .into_iter()
    .flatten()
}

/// Completes the error responses of every operation of `doc` (see the module
/// documentation) and adds the `Problem` and `FieldError` schemas.
pub fn document_errors(doc: &mut OpenApi) {
    for (path, item) in doc.paths.paths.iter_mut() {
        let templated = path.contains('{');
        for op in operations_mut(item) {
            complete(op, templated);
        }
    }
    let components = doc.components.get_or_insert_with(Default::default);
    components
        .schemas
        .entry("Problem".to_owned())
        .or_insert_with(crate::Problem::schema);
    components
        .schemas
        .entry("FieldError".to_owned())
        .or_insert_with(crate::FieldError::schema);
}

fn complete(op: &mut Operation, templated: bool) {
    let params = op.parameters.as_deref().unwrap_or_default();
    let has_input = params.iter().any(|p| p.parameter_in != ParameterIn::Path);
    let has_body = op.request_body.is_some();
    let secured = op
        .security
        .as_ref()
        .is_some_and(|s| !s.is_empty() && s.iter().any(|r| r != &Default::default()));
    let mut add = |status: &str, description: &str| {
        op.responses
            .responses
            .entry(status.to_owned())
            .or_insert_with(|| problem_response(description));
    };
    if has_input || has_body || templated {
        add(
            "400",
            "Malformed request: a query string, header or body that cannot be read",
        );
        add(
            "422",
            "Validation failed: the request is well-formed but a value is not allowed; `errors` names the fields",
        );
    }
    if has_body {
        add("413", "The request body is larger than the server accepts");
        add("415", "The request body is not application/json");
    }
    if templated {
        add("404", "Nothing exists at this path");
    }
    if secured {
        add("401", "Missing or invalid credential");
    }
    for (status, resp) in op.responses.responses.iter_mut() {
        if let RefOr::T(r) = resp {
            if r.description.trim().is_empty() {
                r.description = status
                    .parse::<u16>()
                    .ok()
                    .and_then(|s| axum::http::StatusCode::from_u16(s).ok())
                    .and_then(|s| s.canonical_reason())
                    .unwrap_or("Response")
                    .to_owned();
            }
        }
    }
}
