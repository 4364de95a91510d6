/// Records the payment in the transaction that stores the response.
async fn create_payment(
    __idem_arg0: State<AppState>,
    __idem_last: ::idem_runtime::__private::FingerprintedParts<Json<NewPayment>>,
) -> ::idem_runtime::__private::Response {
    async fn create_payment(
        #[allow(unused_variables)]
        State(app): State<AppState>,
        mut tx: PgTx,
        Json(req): Json<NewPayment>,
    ) -> Result<(StatusCode, Json<Payment>), StatusCode> {
        let id: i64 = sqlx::query_scalar(
                "INSERT INTO payments (amount) VALUES ($1) RETURNING id",
            )
            .bind(req.amount)
            .fetch_one(&mut *tx)
            .await
            .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
        Ok((StatusCode::CREATED, Json(Payment { id, amount: req.amount })))
    }
    let (__idem_arg2, __idem_head) = __idem_last.into_parts();
    let (__idem_store, __idem_target) = {
        let State(app) = &__idem_arg0;
        (
            ::idem_runtime::__private::transactional_store(&(app.idem)),
            ::idem_runtime::__private::target(
                ::core::concat!(::core::module_path!(), "::create_payment"),
                ::idem_runtime::__private::Scope::Inherit,
            ),
        )
    };
    let __idem_body = move |__idem_tx: PgTx| create_payment(
        __idem_arg0,
        __idem_tx,
        __idem_arg2,
    );
    const __IDEM_CONFIG: ::idem_runtime::__private::Config = ::idem_runtime::__private::Config::new()
        .transactional(::idem_runtime::__private::Isolation::Serializable);
    ::idem_runtime::__private::run_transactional(
            __idem_store,
            &__IDEM_CONFIG,
            __idem_target,
            __idem_head,
            __idem_body,
        )
        .await
}
