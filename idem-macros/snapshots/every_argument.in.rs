#[idempotent(
    store = crate::STORE,
    retries = 3,
    backoff = "50ms..1s",
    ttl = "90m",
    lease = "1500ms",
    wait = "10s",
    retry_after = "2s",
    header = "X-Request-Key",
    optional = true,
    keep_server_errors = true,
    release = [429, 408],
    scope = tenant.0,
    crate = "crate::reexported::idem",
)]
#[axum::debug_handler]
async fn ping(Extension(tenant): Extension<Tenant>) -> impl IntoResponse {
    if tenant.is_banned() {
        return StatusCode::FORBIDDEN.into_response();
    }
    "pong".into_response()
}
