//! Tonic service methods: as `#[tonic::async_trait]` on the `impl` rewrites them (tonic's
//! generated traits), and as native `async fn`s; with a scope from the request, a custom
//! metadata key, an optional key, and a transactional method's `Tx`.
#![allow(dead_code)]

use idem_runtime::{SqliteTx, Store, idempotent};
use tonic::{Request, Response, Status};

#[tonic::async_trait]
trait Greeter: Send + Sync + 'static {
    async fn greet(&self, request: Request<String>) -> Result<Response<String>, Status>;
    async fn count(&self, request: Request<String>) -> Result<Response<u32>, Status>;
    async fn record(&self, request: Request<String>) -> Result<Response<String>, Status>;
}

#[derive(Clone)]
struct Service {
    idem: Store,
}

impl Service {
    async fn check(&self, name: &str) -> Result<(), Status> {
        if name.is_empty() {
            return Err(Status::invalid_argument("empty"));
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl Greeter for Service {
    #[idempotent(store = self.idem, scope = request.metadata().len(), ttl = "1h")]
    async fn greet(&self, request: Request<String>) -> Result<Response<String>, Status> {
        self.check(request.get_ref()).await?;
        Ok(Response::new(format!("hello {}", request.into_inner())))
    }

    #[idempotent(store = self.idem, header = "x-request-id", optional = true)]
    async fn count(&self, _: Request<String>) -> Result<Response<u32>, Status> {
        Ok(Response::new(1))
    }

    #[idempotent(store = self.idem, transactional, isolation = "serializable")]
    async fn record(
        &self,
        mut tx: SqliteTx,
        request: Request<String>,
    ) -> Result<Response<String>, Status> {
        sqlx::query("INSERT INTO names (name) VALUES ($1)")
            .bind(request.get_ref())
            .execute(&mut *tx)
            .await
            .map_err(|_| Status::internal("not recorded"))?;
        Ok(Response::new(format!("recorded {}", self.idem.backend().type_id_name())))
    }
}

trait Named {
    fn type_id_name(&self) -> &'static str {
        "store"
    }
}

impl<T: ?Sized> Named for T {}

/// A native `async fn` method (an inherent `impl`, or a trait without `#[async_trait]`).
impl Service {
    #[idempotent(store = self.idem)]
    async fn native(&self, request: Request<String>) -> Result<Response<String>, Status> {
        self.check(request.get_ref()).await?;
        Ok(Response::new(request.into_inner()))
    }
}

fn main() {}
