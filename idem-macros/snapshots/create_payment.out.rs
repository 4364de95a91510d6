/// Charges once per key.
async fn create_payment(
    __idem_arg0: State<AppState>,
    __idem_last: ::idem_runtime::__private::FingerprintedParts<Json<NewPayment>>,
) -> ::idem_runtime::__private::Response {
    async fn create_payment(
        #[allow(unused_variables)]
        State(app): State<AppState>,
        Json(req): Json<NewPayment>,
    ) -> Result<(StatusCode, Json<Payment>), StatusCode> {
        if req.amount <= 0 {
            return Err(StatusCode::UNPROCESSABLE_ENTITY);
        }
        Ok((
            StatusCode::CREATED,
            Json(Payment {
                id: 1,
                amount: req.amount,
            }),
        ))
    }
    let (__idem_arg1, __idem_head) = __idem_last.into_parts();
    let (__idem_store, __idem_target) = {
        let State(app) = &__idem_arg0;
        (
            ::idem_runtime::__private::store(&(app.idem)),
            ::idem_runtime::__private::target(
                ::core::concat!(::core::module_path!(), "::create_payment"),
                ::idem_runtime::__private::Scope::Inherit,
            ),
        )
    };
    let __idem_body = create_payment(__idem_arg0, __idem_arg1);
    const __IDEM_CONFIG: ::idem_runtime::__private::Config = ::idem_runtime::__private::Config::new()
        .retries(5)
        .ttl(::core::time::Duration::from_secs(86400));
    ::idem_runtime::__private::run(
            __idem_store,
            &__IDEM_CONFIG,
            __idem_target,
            __idem_head,
            __idem_body,
        )
        .await
}
