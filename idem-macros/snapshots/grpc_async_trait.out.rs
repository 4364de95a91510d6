/// Charges once per key: the method as `#[tonic::async_trait]` on its `impl` hands it over.
fn create_payment<'life0, 'async_trait>(
    &'life0 self,
    request: tonic::Request<NewPayment>,
) -> ::core::pin::Pin<
    Box<
        dyn ::core::future::Future<
            Output = Result<tonic::Response<Payment>, tonic::Status>,
        > + ::core::marker::Send + 'async_trait,
    >,
>
where
    'life0: 'async_trait,
    Self: 'async_trait,
{
    let __idem_store = ::idem_runtime::__private::transactional_store(&(self.idem));
    let __idem_target = ::idem_runtime::__private::method_target(
        ::core::any::type_name::<Self>(),
        "create_payment",
        ::idem_runtime::__private::Scope::Inherit,
    );
    let __idem_service = ::idem_runtime::__private::grpc_service(self);
    let __idem_method = move |request: tonic::Request<NewPayment>, tx: PgTx| ::idem_runtime::__private::typed::<
        Result<tonic::Response<Payment>, tonic::Status>,
        _,
    >(async move {
        let __idem_self = &__idem_service;
        if let ::core::option::Option::Some(__ret) = ::core::option::Option::None::<
            Result<tonic::Response<Payment>, tonic::Status>,
        > {
            #[allow(unreachable_code)] return __ret;
        }
        let __self = __idem_self;
        let mut tx = tx;
        let request = request;
        let __ret: Result<tonic::Response<Payment>, tonic::Status> = {
            let payment = __self.charge(&mut *tx, request.into_inner()).await?;
            Ok(tonic::Response::new(payment))
        };
        #[allow(unreachable_code)] __ret
    });
    const __IDEM_CONFIG: ::idem_runtime::__private::Config = ::idem_runtime::__private::Config::new()
        .transactional(::idem_runtime::__private::Isolation::Default);
    ::std::boxed::Box::pin(
        ::idem_runtime::__private::grpc_run_transactional(
            __idem_store,
            &__IDEM_CONFIG,
            __idem_target,
            request,
            __idem_method,
        ),
    )
}
