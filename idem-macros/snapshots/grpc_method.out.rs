/// Charges once per key.
async fn create_payment(
    &self,
    request: tonic::Request<NewPayment>,
) -> Result<tonic::Response<Payment>, tonic::Status> {
    let __idem_store = ::idem_runtime::__private::store(&(self.idem));
    let __idem_target = ::idem_runtime::__private::method_target(
        ::core::any::type_name::<Self>(),
        "create_payment",
        ::idem_runtime::__private::scope(&(tenant(&request))),
    );
    let __idem_service = ::idem_runtime::__private::grpc_service(self);
    let __idem_method = move |request: tonic::Request<NewPayment>| ::idem_runtime::__private::typed::<
        Result<tonic::Response<Payment>, tonic::Status>,
        _,
    >(async move {
        let __idem_self = &__idem_service;
        let payment = __idem_self.charge(request.into_inner()).await?;
        Ok(tonic::Response::new(payment))
    });
    const __IDEM_CONFIG: ::idem_runtime::__private::Config = ::idem_runtime::__private::Config::new();
    ::idem_runtime::__private::grpc_run(
            __idem_store,
            &__IDEM_CONFIG,
            __idem_target,
            request,
            __idem_method,
        )
        .await
}
