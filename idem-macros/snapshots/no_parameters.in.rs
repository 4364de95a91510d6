#[idempotent(store = "stores::shared()")]
async fn tick() -> Result<Json<u64>, Error> {
    Ok(Json(clock::now()?))
}
