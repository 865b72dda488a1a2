//! Mounting an adapter in front of a router: the requests it takes, and the rest passed on.

use std::convert::Infallible;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::response::Response;
use futures_util::future::Either;
use http::Request;
use tower::{Layer, Service};

use crate::BoxFuture;

/// What an adapter serves on the HTTP server: the requests it takes (upgrades, polls), each
/// answered by a future; the others are given back for the service behind it.
pub trait Endpoint: Clone + Send + Sync + 'static {
    /// What it reads of a request it takes (the namespace a path names, say).
    type Claim;

    /// Whether it takes `req`, and what it read of it.
    fn claim(&self, req: &Request<Body>) -> Option<Self::Claim>;

    /// Answers a request it took.
    fn answer(&self, claim: Self::Claim, req: Request<Body>) -> BoxFuture<'static, Response>;
}

/// A tower layer putting an [`Endpoint`] in front of a service (an axum `Router`, say).
#[derive(Clone, Debug)]
pub struct EndpointLayer<E> {
    endpoint: E,
}

impl<E> EndpointLayer<E> {
    /// The layer of `endpoint`.
    pub fn new(endpoint: E) -> Self {
        Self { endpoint }
    }
}

impl<E: Clone, S> Layer<S> for EndpointLayer<E> {
    type Service = EndpointService<E, S>;

    fn layer(&self, inner: S) -> Self::Service {
        EndpointService { endpoint: self.endpoint.clone(), inner }
    }
}

/// The service of [`EndpointLayer`].
#[derive(Clone, Debug)]
pub struct EndpointService<E, S> {
    endpoint: E,
    inner: S,
}

impl<E, S> Service<Request<Body>> for EndpointService<E, S>
where
    E: Endpoint,
    S: Service<Request<Body>, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<S::Future, BoxFuture<'static, Result<Response, Infallible>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        match self.endpoint.claim(&req) {
            Some(claim) => {
                let answer = self.endpoint.answer(claim, req);
                Either::Right(Box::pin(async move { Ok(answer.await) }))
            }
            None => Either::Left(self.inner.call(req)),
        }
    }
}
