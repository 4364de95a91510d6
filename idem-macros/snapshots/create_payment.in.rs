/// Charges once per key.
#[idempotent(store = "app.idem", retries = 5, ttl = "24h")]
async fn create_payment(
    State(app): State<AppState>,
    Json(req): Json<NewPayment>,
) -> Result<(StatusCode, Json<Payment>), StatusCode> {
    if req.amount <= 0 {
        return Err(StatusCode::UNPROCESSABLE_ENTITY);
    }
    Ok((StatusCode::CREATED, Json(Payment { id: 1, amount: req.amount })))
}
