/// Records the order and its inbox entry in one transaction; callers pass only the message.
#[idempotent(store = STORE, key = format!("order-{}", msg.order_id), transactional)]
pub async fn consume(mut tx: SqliteTx, msg: OrderPlaced) -> Result<Receipt, ConsumerError> {
    sqlx::query("INSERT INTO orders (id, amount) VALUES (?, ?)")
        .bind(msg.order_id)
        .bind(msg.amount)
        .execute(&mut *tx)
        .await?;
    Ok(Receipt { order_id: msg.order_id })
}
