/// One caller only (a payment provider's webhook): its keys are shared on purpose.
#[idempotent(store = app.idem, scope = none)]
async fn provider_webhook(State(app): State<AppState>, body: Bytes) -> StatusCode {
    app.events.push(body);
    StatusCode::NO_CONTENT
}
