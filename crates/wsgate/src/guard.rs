//! Guards: per-message authorization (Nest's `@UseGuards` / `CanActivate`).

use std::future::Future;

use crate::exception::{WsError, WsException};
use crate::extract::MessageContext;
use crate::handshake::BoxFuture;

/// Decides whether a message may reach its handler. Gateway guards run before handler guards.
#[diagnostic::on_unimplemented(
    note = "a guard is a type implementing `wsgate::Guard`, or a closure `Fn(&MessageContext) -> Result<(), WsException>`"
)]
pub trait Guard: Send + Sync + 'static {
    /// `Ok(())` lets the message through; an error is the reply.
    fn can_activate(
        &self,
        ctx: &MessageContext,
    ) -> impl Future<Output = Result<(), WsError>> + Send;
}

impl<F> Guard for F
where
    F: Fn(&MessageContext) -> Result<(), WsException> + Send + Sync + 'static,
{
    fn can_activate(
        &self,
        ctx: &MessageContext,
    ) -> impl Future<Output = Result<(), WsError>> + Send {
        std::future::ready(self(ctx).map_err(WsError::from))
    }
}

pub(crate) trait DynGuard: Send + Sync + 'static {
    fn check<'a>(&'a self, ctx: &'a MessageContext) -> BoxFuture<'a, Result<(), WsError>>;
}

impl<G: Guard> DynGuard for G {
    fn check<'a>(&'a self, ctx: &'a MessageContext) -> BoxFuture<'a, Result<(), WsError>> {
        Box::pin(self.can_activate(ctx))
    }
}
