/// Records a payment; a retry with the same `Idempotency-Key` gets the first answer back.
#[idempotent(store = "app.idem", retries = 5)]
pub async fn create_payment(
    State(app): State<AppState>,
    Json(req): Json<NewPayment>,
) -> Result<(StatusCode, Json<Payment>), ApiError> {
    let payment = app.payments.record(req.amount, &req.currency).await?;
    Ok((StatusCode::CREATED, Json(payment)))
}
