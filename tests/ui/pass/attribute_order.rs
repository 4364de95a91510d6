//! `#[tracing::instrument]` and `#[axum::debug_handler]` above and below `#[idempotent]`: the
//! user's function stays whole inside the handler, so either attribute sees it as written,
//! `skip`, `fields` and `err` naming its own parameters.
#![deny(warnings)]

use axum::extract::{Json, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use idem_runtime::{idempotent, MemoryStore, Store};
use serde::Deserialize;

#[derive(Clone)]
struct AppState {
    idem: Store,
}

#[derive(Debug, Deserialize)]
struct NewOrder {
    sku: String,
    quantity: u32,
}

#[derive(Debug)]
struct ApiError;

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("api error")
    }
}

impl axum::response::IntoResponse for ApiError {
    fn into_response(self) -> axum::response::Response {
        StatusCode::UNPROCESSABLE_ENTITY.into_response()
    }
}

#[idempotent(store = "app.idem")]
#[tracing::instrument(skip(app, body), fields(sku = %body.sku), err)]
async fn instrument_below(
    State(app): State<AppState>,
    Json(body): Json<NewOrder>,
) -> Result<String, ApiError> {
    if body.quantity == 0 {
        return Err(ApiError);
    }
    Ok(body.sku)
}

#[tracing::instrument(skip(app, body), fields(sku = %body.sku), err)]
#[idempotent(store = "app.idem")]
async fn instrument_above(
    State(app): State<AppState>,
    Json(body): Json<NewOrder>,
) -> Result<String, ApiError> {
    if body.quantity == 0 {
        return Err(ApiError);
    }
    Ok(body.sku)
}

#[idempotent(store = "app.idem")]
#[axum::debug_handler]
async fn debug_handler_below(State(app): State<AppState>, Json(body): Json<NewOrder>) -> String {
    body.sku
}

#[axum::debug_handler]
#[idempotent(store = "app.idem")]
async fn debug_handler_above(State(app): State<AppState>, Json(body): Json<NewOrder>) -> String {
    body.sku
}

/// Both at once, one on each side, with a mutable binding and an unused one.
#[axum::debug_handler]
#[idempotent(store = app.idem)]
#[tracing::instrument(skip_all, fields(quantity = body.quantity))]
async fn both(State(app): State<AppState>, Json(mut body): Json<NewOrder>) -> String {
    body.sku.push('!');
    body.sku
}

#[tracing::instrument(skip(app))]
#[idempotent(store = app.idem)]
#[axum::debug_handler]
async fn both_reversed(State(app): State<AppState>, body: String) -> String {
    body
}

fn main() {
    let state = AppState {
        idem: Store::new(MemoryStore::new()),
    };
    let _app: Router = Router::new()
        .route("/instrument_below", post(instrument_below))
        .route("/instrument_above", post(instrument_above))
        .route("/debug_handler_below", post(debug_handler_below))
        .route("/debug_handler_above", post(debug_handler_above))
        .route("/both", post(both))
        .route("/both_reversed", post(both_reversed))
        .with_state(state);
}
