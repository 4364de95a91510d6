/// Records the order and its inbox entry in one transaction; callers pass only the message.
pub async fn consume(msg: OrderPlaced) -> Result<Receipt, ConsumerError> {
    let __idem_arguments = ::idem_runtime::__private::Arguments::new().arg(&msg);
    let __idem_store = ::idem_runtime::__private::transactional_store(&(STORE));
    let __idem_key = ::idem_runtime::__private::key(
        &(format!("order-{}", msg.order_id)),
    );
    let __idem_target = ::idem_runtime::__private::target(
        ::core::concat!(::core::module_path!(), "::consume"),
        ::idem_runtime::__private::Scope::Inherit,
    );
    let __idem_body = move |mut tx: SqliteTx| ::idem_runtime::__private::typed::<
        Result<Receipt, ConsumerError>,
        _,
    >(async move {
        sqlx::query("INSERT INTO orders (id, amount) VALUES (?, ?)")
            .bind(msg.order_id)
            .bind(msg.amount)
            .execute(&mut *tx)
            .await?;
        Ok(Receipt { order_id: msg.order_id })
    });
    const __IDEM_CONFIG: ::idem_runtime::__private::Config = ::idem_runtime::__private::Config::new()
        .transactional(::idem_runtime::__private::Isolation::Default);
    ::idem_runtime::__private::call_transactional(
            __idem_store,
            &__IDEM_CONFIG,
            __idem_target,
            __idem_key,
            __idem_arguments,
            __idem_body,
        )
        .await
}
