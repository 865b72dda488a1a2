//! Interceptors (Nest's `@UseInterceptors`): code around a handler, after the guards. Server-wide
//! ([`AppBuilder::interceptor`](crate::AppBuilder::interceptor)), per gateway
//! ([`GatewayOptions::interceptor`](crate::GatewayOptions::interceptor)) and per handler
//! ([`Route::interceptor`](crate::Route::interceptor), `#[use_interceptors(...)]`), run
//! outermost first in that order.
//!
//! An interceptor sees the message ([`MessageContext`]), may call the rest of the chain
//! ([`Next::run`]) or not (a cache answering at once), and returns the [`Reply`], its own or the
//! handler's, changed or not: logging, timing, transforming a reply, short-circuiting.
//!
//! ```
//! use std::time::Instant;
//! use wsgate::{Interceptor, MessageContext, Next, Reply};
//!
//! struct Timing;
//!
//! impl Interceptor for Timing {
//!     async fn intercept(&self, ctx: &MessageContext, next: Next<'_>) -> Reply {
//!         let started = Instant::now();
//!         let reply = next.run().await;
//!         tracing::info!(event = %ctx.event(), took = ?started.elapsed(), "handled");
//!         reply
//!     }
//! }
//! ```

use std::future::Future;
use std::sync::Arc;

use crate::extract::MessageContext;
use crate::handler::ErasedHandler;
use crate::handshake::BoxFuture;
use crate::reply::Reply;

/// Code around a handler (Nest's `NestInterceptor`), after the guards: logging, timing, changing
/// the reply, answering from a cache. Server-wide, per gateway or per handler, outermost first.
pub trait Interceptor: Send + Sync + 'static {
    /// Handles the message: call `next.run()` for the rest of the chain and the handler, or
    /// answer without it.
    fn intercept(&self, ctx: &MessageContext, next: Next<'_>)
    -> impl Future<Output = Reply> + Send;
}

/// An interceptor with its future boxed, for the chain.
pub(crate) trait DynInterceptor: Send + Sync + 'static {
    fn intercept<'a>(&'a self, ctx: &'a MessageContext, next: Next<'a>) -> BoxFuture<'a, Reply>;
}

impl<I: Interceptor> DynInterceptor for I {
    fn intercept<'a>(&'a self, ctx: &'a MessageContext, next: Next<'a>) -> BoxFuture<'a, Reply> {
        Box::pin(Interceptor::intercept(self, ctx, next))
    }
}

/// The rest of the chain: the interceptors inside this one, then the handler.
pub struct Next<'a> {
    ctx: &'a MessageContext,
    rest: &'a [Arc<dyn DynInterceptor>],
    handler: &'a dyn ErasedHandler,
}

impl<'a> Next<'a> {
    pub(crate) fn new(
        ctx: &'a MessageContext,
        chain: &'a [Arc<dyn DynInterceptor>],
        handler: &'a dyn ErasedHandler,
    ) -> Self {
        Self { ctx, rest: chain, handler }
    }

    /// Runs the rest of the chain and the handler, and gives their reply.
    pub async fn run(self) -> Reply {
        match self.rest.split_first() {
            Some((first, rest)) => {
                let next = Next { ctx: self.ctx, rest, handler: self.handler };
                first.intercept(self.ctx, next).await
            }
            None => self.handler.call(self.ctx).await,
        }
    }
}

impl std::fmt::Debug for Next<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Next").field("interceptors", &self.rest.len()).finish_non_exhaustive()
    }
}
