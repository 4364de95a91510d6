/// Records the payment in the transaction that stores the response.
#[idempotent(store = app.idem, transactional, isolation = "serializable")]
async fn create_payment(
    State(app): State<AppState>,
    mut tx: PgTx,
    Json(req): Json<NewPayment>,
) -> Result<(StatusCode, Json<Payment>), StatusCode> {
    let id: i64 = sqlx::query_scalar("INSERT INTO payments (amount) VALUES ($1) RETURNING id")
        .bind(req.amount)
        .fetch_one(&mut *tx)
        .await
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
    Ok((StatusCode::CREATED, Json(Payment { id, amount: req.amount })))
}
