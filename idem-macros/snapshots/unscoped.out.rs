/// One caller only (a payment provider's webhook): its keys are shared on purpose.
async fn provider_webhook(
    __idem_arg0: State<AppState>,
    __idem_last: ::idem_runtime::__private::Fingerprinted<Bytes>,
) -> ::idem_runtime::__private::Response {
    async fn provider_webhook(
        #[allow(unused_variables)]
        State(app): State<AppState>,
        body: Bytes,
    ) -> StatusCode {
        app.events.push(body);
        StatusCode::NO_CONTENT
    }
    let (__idem_arg1, __idem_head) = __idem_last.into_parts();
    let (__idem_store, __idem_target) = {
        let State(app) = &__idem_arg0;
        (
            ::idem_runtime::__private::store(&(app.idem)),
            ::idem_runtime::__private::target(
                ::core::concat!(::core::module_path!(), "::provider_webhook"),
                ::idem_runtime::__private::Scope::None,
            ),
        )
    };
    let __idem_body = provider_webhook(__idem_arg0, __idem_arg1);
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
