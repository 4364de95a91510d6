use idem_runtime::{Store, idempotent};
use tonic::{Request, Response, Status};

#[derive(Clone)]
struct Service {
    idem: Store,
}

impl Service {
    #[idempotent(store = self.idem)]
    async fn mutable(&mut self, request: Request<String>) -> Result<Response<String>, Status> {
        Ok(Response::new(request.into_inner()))
    }

    #[idempotent(store = self.idem)]
    async fn two(&self, request: Request<String>, extra: u32) -> Result<Response<String>, Status> {
        Ok(Response::new(format!("{}{extra}", request.into_inner())))
    }

    #[idempotent(store = self.idem)]
    async fn not_a_response(&self, request: Request<String>) -> Result<String, Status> {
        Ok(request.into_inner())
    }

    #[idempotent(store = self.idem)]
    fn not_async(&self, request: Request<String>) -> Result<Response<String>, Status> {
        Ok(Response::new(request.into_inner()))
    }
}

fn main() {}
