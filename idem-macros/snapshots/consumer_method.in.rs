/// Handles one message, once per order.
#[idempotent(
    store = "self.idem",
    key = "format!(\"order-{}\", msg.order_id)",
    ttl = "7d",
    scope = "self.tenant",
)]
pub async fn handle(
    &self,
    msg: OrderPlaced,
    (attempt, _): (u32, Instant),
    #[idem(skip)] db: &Db,
) -> Result<Receipt, ConsumerError> {
    let receipt = db.charge(msg.order_id, msg.amount).await?;
    Ok(receipt)
}
