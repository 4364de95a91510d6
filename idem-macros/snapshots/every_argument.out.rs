#[axum::debug_handler]
async fn ping(
    __idem_last: crate::reexported::idem::__private::Fingerprinted<
        Extension<Tenant>,
        true,
    >,
) -> crate::reexported::idem::__private::Response {
    let (Extension(tenant), __idem_head) = __idem_last.into_parts();
    let __idem_store = crate::reexported::idem::__private::store(&(crate::STORE));
    let __idem_target = crate::reexported::idem::__private::target(
        ::core::concat!(::core::module_path!(), "::ping"),
        crate::reexported::idem::__private::scope(&(tenant.0)),
    );
    let __idem_body = crate::reexported::idem::__private::typed::<
        _,
        _,
    >(async move {
        if tenant.is_banned() {
            return StatusCode::FORBIDDEN.into_response();
        }
        "pong".into_response()
    });
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
        .header("X-Request-Key")
        .optional(true);
    crate::reexported::idem::__private::run(
            __idem_store,
            &__IDEM_CONFIG,
            __idem_target,
            __idem_head,
            __idem_body,
        )
        .await
}
