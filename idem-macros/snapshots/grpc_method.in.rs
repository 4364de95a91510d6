/// Charges once per key.
#[idempotent(store = self.idem, scope = tenant(&request))]
async fn create_payment(
    &self,
    request: tonic::Request<NewPayment>,
) -> Result<tonic::Response<Payment>, tonic::Status> {
    let payment = self.charge(request.into_inner()).await?;
    Ok(tonic::Response::new(payment))
}
