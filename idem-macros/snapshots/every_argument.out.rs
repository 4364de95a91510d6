async fn ping(
    __idem_last: crate::reexported::idem::__private::FingerprintedAllHeaders<
        Extension<Tenant>,
    >,
) -> crate::reexported::idem::__private::Response {
    #[axum::debug_handler]
    async fn ping(
        #[allow(unused_variables)]
        Extension(tenant): Extension<Tenant>,
    ) -> impl IntoResponse {
        if tenant.is_banned() {
            return StatusCode::FORBIDDEN.into_response();
        }
        "pong".into_response()
    }
    let (__idem_arg0, __idem_head) = __idem_last.into_parts();
    let (__idem_store, __idem_target) = {
        let Extension(tenant) = &__idem_arg0;
        (
            crate::reexported::idem::__private::store(&(crate::STORE)),
            crate::reexported::idem::__private::target(
                ::core::concat!(::core::module_path!(), "::ping"),
                crate::reexported::idem::__private::scope(&(tenant.0)),
            ),
        )
    };
    let __idem_body = ping(__idem_arg0);
    const __IDEM_CONFIG: crate::reexported::idem::__private::Config = crate::reexported::idem::__private::Config::new()
        .retries(3)
        .backoff(
            crate::reexported::idem::__private::Backoff::new(
                ::core::time::Duration::from_millis(50),
                ::core::time::Duration::from_secs(1),
            ),
        )
        .ttl(::core::time::Duration::from_secs(5400))
        .lease(::core::time::Duration::from_millis(1500))
        .wait(::core::time::Duration::from_secs(10))
        .retry_after(::core::time::Duration::from_secs(2))
        .header("X-Request-Key")
        .optional(true)
        .keep_server_errors(true)
        .release_statuses(&[429, 408]);
    crate::reexported::idem::__private::run(
            __idem_store,
            &__IDEM_CONFIG,
            __idem_target,
            __idem_head,
            __idem_body,
        )
        .await
}
