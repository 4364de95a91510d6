async fn tick(
    __idem_last: ::idem_runtime::__private::FingerprintedParts<()>,
) -> ::idem_runtime::__private::Response {
    async fn tick() -> Result<Json<u64>, Error> {
        Ok(Json(clock::now()?))
    }
    let ((), __idem_head) = __idem_last.into_parts();
    let __idem_store = ::idem_runtime::__private::store(&(stores::shared()));
    let __idem_target = ::idem_runtime::__private::target(
        ::core::concat!(::core::module_path!(), "::tick"),
        ::idem_runtime::__private::Scope::Inherit,
    );
    let __idem_body = tick();
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
