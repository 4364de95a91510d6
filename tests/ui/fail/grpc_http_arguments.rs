use idem_runtime::{Store, idempotent};
use tonic::{Request, Response, Status};

#[derive(Clone)]
struct Service {
    idem: Store,
}

impl Service {
    #[idempotent(store = self.idem, keep_server_errors = true, release = [429])]
    async fn charge(&self, request: Request<String>) -> Result<Response<String>, Status> {
        Ok(Response::new(request.into_inner()))
    }

    #[idempotent(store = self.idem, transactional)]
    async fn without_tx(&self, request: Request<String>) -> Result<Response<String>, Status> {
        Ok(Response::new(request.into_inner()))
    }
}

fn main() {}
