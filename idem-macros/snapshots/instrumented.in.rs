/// Docs, lint levels and `cfg` stay on the handler; other attributes go with the function.
#[idempotent(store = app.idem, scope = user.tenant_id)]
#[tracing::instrument(skip(app), fields(tenant = user.tenant_id), err)]
#[allow(clippy::unused_async)]
pub async fn create_order(
    State(app): State<AppState>,
    Extension(mut user): Extension<User>,
    Json(Order { ref sku, quantity, .. }): Json<Order>,
) -> Result<Json<Receipt>, ApiError> {
    user.orders += 1;
    Ok(Json(Receipt::new(sku, quantity)))
}
