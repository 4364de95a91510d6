//! Every return shape: concrete types, `impl IntoResponse`, `Result` with `?`, early return.
#![deny(warnings)]

use axum::extract::{Json, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use idem_runtime::{idempotent, MemoryStore, Store};
use serde::{Deserialize, Serialize};

#[derive(Clone)]
struct AppState {
    idem: Store,
}

#[derive(Deserialize)]
struct NewPayment {
    amount: i64,
}

#[derive(Serialize)]
struct Payment {
    id: u64,
    amount: i64,
}

struct ApiError(StatusCode);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.0.into_response()
    }
}

impl From<std::num::TryFromIntError> for ApiError {
    fn from(_: std::num::TryFromIntError) -> Self {
        ApiError(StatusCode::UNPROCESSABLE_ENTITY)
    }
}

#[idempotent(store = "app.idem")]
async fn unit(State(app): State<AppState>) {}

#[idempotent(store = "app.idem")]
async fn status(State(app): State<AppState>) -> StatusCode {
    StatusCode::ACCEPTED
}

#[idempotent(store = "app.idem")]
async fn response(State(app): State<AppState>) -> Response {
    StatusCode::ACCEPTED.into_response()
}

#[idempotent(store = "app.idem")]
async fn tuple(
    State(app): State<AppState>,
    Json(req): Json<NewPayment>,
) -> (StatusCode, Json<Payment>) {
    (StatusCode::CREATED, Json(Payment { id: 1, amount: req.amount }))
}

#[idempotent(store = "app.idem")]
async fn opaque(State(app): State<AppState>) -> impl IntoResponse {
    (StatusCode::CREATED, "created")
}

/// `?` converts the error, `return` leaves the body early: both keep their meaning.
#[idempotent(store = "app.idem")]
async fn fallible(
    State(app): State<AppState>,
    Json(req): Json<NewPayment>,
) -> Result<(StatusCode, Json<Payment>), ApiError> {
    if req.amount <= 0 {
        return Err(ApiError(StatusCode::UNPROCESSABLE_ENTITY));
    }
    let id = u64::try_from(req.amount)?;
    Ok((StatusCode::CREATED, Json(Payment { id, amount: req.amount })))
}

#[idempotent(store = "app.idem")]
async fn fallible_opaque(
    State(app): State<AppState>,
    Json(req): Json<NewPayment>,
) -> Result<impl IntoResponse, ApiError> {
    let id = u64::try_from(req.amount)?;
    if id == 0 {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    Ok((StatusCode::CREATED, id.to_string()).into_response())
}

#[idempotent(store = "app.idem")]
async fn early_return(State(app): State<AppState>, body: String) -> String {
    if body.is_empty() {
        return "empty".to_owned();
    }
    let awaited = async { body.len() }.await;
    awaited.to_string()
}

fn main() {
    let state = AppState {
        idem: Store::new(MemoryStore::new()),
    };
    let _app: Router = Router::new()
        .route("/unit", post(unit))
        .route("/status", post(status))
        .route("/response", post(response))
        .route("/tuple", post(tuple))
        .route("/opaque", post(opaque))
        .route("/fallible", post(fallible))
        .route("/fallible_opaque", post(fallible_opaque))
        .route("/early_return", post(early_return))
        .with_state(state);
}
