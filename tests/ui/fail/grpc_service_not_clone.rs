use idem_runtime::{Store, idempotent};
use tonic::{Request, Response, Status};

/// Not `Clone`: a call cannot take the service into a task of its own.
struct Service {
    idem: Store,
}

impl Service {
    #[idempotent(store = self.idem)]
    async fn charge(&self, request: Request<String>) -> Result<Response<String>, Status> {
        Ok(Response::new(format!("{} {}", request.into_inner(), self.idem.backend().stats_name())))
    }
}

trait Named {
    fn stats_name(&self) -> &'static str {
        "store"
    }
}

impl<T: ?Sized> Named for T {}

struct NotAMessage;

#[derive(Clone)]
struct Other {
    idem: Store,
}

impl Other {
    #[idempotent(store = self.idem)]
    async fn charge(&self, _: Request<NotAMessage>) -> Result<Response<String>, Status> {
        Ok(Response::new(String::new()))
    }
}

fn main() {}
