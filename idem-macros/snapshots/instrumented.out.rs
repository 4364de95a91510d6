/// Docs, lint levels and `cfg` stay on the handler; other attributes go with the function.
#[allow(clippy::unused_async)]
pub async fn create_order(
    __idem_arg0: State<AppState>,
    __idem_arg1: Extension<User>,
    __idem_last: ::idem_runtime::__private::Fingerprinted<Json<Order>>,
) -> ::idem_runtime::__private::Response {
    #[tracing::instrument(skip(app), fields(tenant = user.tenant_id), err)]
    async fn create_order(
        #[allow(unused_variables)]
        State(app): State<AppState>,
        #[allow(unused_variables)]
        Extension(mut user): Extension<User>,
        Json(Order { ref sku, quantity, .. }): Json<Order>,
    ) -> Result<Json<Receipt>, ApiError> {
        user.orders += 1;
        Ok(Json(Receipt::new(sku, quantity)))
    }
    let (__idem_arg2, __idem_head) = __idem_last.into_parts();
    let (__idem_store, __idem_target) = {
        let State(app) = &__idem_arg0;
        let Extension(user) = &__idem_arg1;
        (
            ::idem_runtime::__private::store(&(app.idem)),
            ::idem_runtime::__private::target(
                ::core::concat!(::core::module_path!(), "::create_order"),
                ::idem_runtime::__private::scope(&(user.tenant_id)),
            ),
        )
    };
    let __idem_body = create_order(__idem_arg0, __idem_arg1, __idem_arg2);
    const __IDEM_CONFIG: ::idem_runtime::__private::Config = ::idem_runtime::__private::Config::new();
    ::idem_runtime::__private::run(
            __idem_store,
            &__IDEM_CONFIG,
            __idem_target,
            __idem_head,
            __idem_body,
        )
        .await
}
