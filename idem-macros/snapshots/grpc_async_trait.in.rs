/// Charges once per key: the method as `#[tonic::async_trait]` on its `impl` hands it over.
#[idempotent(store = self.idem, transactional)]
fn create_payment<'life0, 'async_trait>(
    &'life0 self,
    tx: PgTx,
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
    Box::pin(async move {
        if let ::core::option::Option::Some(__ret) = ::core::option::Option::None::<
            Result<tonic::Response<Payment>, tonic::Status>,
        > {
            #[allow(unreachable_code)] return __ret;
        }
        let __self = self;
        let mut tx = tx;
        let request = request;
        let __ret: Result<tonic::Response<Payment>, tonic::Status> = {
            let payment = __self.charge(&mut *tx, request.into_inner()).await?;
            Ok(tonic::Response::new(payment))
        };
        #[allow(unreachable_code)] __ret
    })
}
