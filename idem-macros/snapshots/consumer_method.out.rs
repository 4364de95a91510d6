/// Handles one message, once per order.
pub async fn handle(
    &self,
    msg: OrderPlaced,
    __idem_arg1: (u32, Instant),
    db: &Db,
) -> Result<Receipt, ConsumerError> {
    let __idem_arguments = ::idem_runtime::__private::Arguments::new()
        .arg(&msg)
        .arg(&__idem_arg1);
    let (attempt, _) = __idem_arg1;
    let __idem_store = ::idem_runtime::__private::store(&(self.idem));
    let __idem_key = ::idem_runtime::__private::key(
        &(format!("order-{}", msg.order_id)),
    );
    let __idem_target = ::idem_runtime::__private::method_target(
        ::core::any::type_name::<Self>(),
        "handle",
        ::idem_runtime::__private::scope(&(self.tenant)),
    );
    let __idem_body = ::idem_runtime::__private::typed::<
        Result<Receipt, ConsumerError>,
        _,
    >(async move {
        let receipt = db.charge(msg.order_id, msg.amount).await?;
        Ok(receipt)
    });
    const __IDEM_CONFIG: ::idem_runtime::__private::Config = ::idem_runtime::__private::Config::new()
        .ttl(::core::time::Duration::from_secs(604800));
    ::idem_runtime::__private::call(
            __idem_store,
            &__IDEM_CONFIG,
            __idem_target,
            __idem_key,
            __idem_arguments,
            __idem_body,
        )
        .await
}
