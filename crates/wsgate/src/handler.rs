//! Handlers: async functions of a gateway and extractors (axum's `Handler`).

use std::future::Future;
use std::sync::Arc;

use crate::extract::{FromMessage, MessageContext};
use crate::handshake::BoxFuture;
use crate::reply::{IntoReply, Reply};

/// An async function taking the gateway (`Arc<G>`) and up to 12 extractors, returning anything
/// that implements [`IntoReply`].
///
/// Methods written `async fn show(self: Arc<Self>, Data(d): Data<D>) -> ...` are handlers as
/// they are; `#[gateway]` adapts `&self` methods.
#[diagnostic::on_unimplemented(
    note = "a handler is `async fn(Arc<Gateway>, extractors...) -> impl IntoReply`; every argument after the gateway must implement `FromMessage`"
)]
pub trait Handler<G, T>: Send + Sync + 'static {
    /// Extracts the arguments and calls the function.
    fn call(&self, gateway: &Arc<G>, ctx: &MessageContext) -> BoxFuture<'static, Reply>;
}

macro_rules! impl_handler {
    ($($ty:ident),*) => {
        #[allow(non_snake_case, unused_variables)]
        impl<G, F, Fut, R, $($ty,)*> Handler<G, ($($ty,)*)> for F
        where
            G: Send + Sync + 'static,
            F: Fn(Arc<G>, $($ty,)*) -> Fut + Send + Sync + 'static,
            Fut: Future<Output = R> + Send + 'static,
            R: IntoReply,
            $($ty: FromMessage + Send + 'static,)*
        {
            fn call(&self, gateway: &Arc<G>, ctx: &MessageContext) -> BoxFuture<'static, Reply> {
                $(
                    let $ty = match $ty::from_message(ctx) {
                        Ok(v) => v,
                        Err(e) => return Box::pin(std::future::ready(Reply::Error(e))),
                    };
                )*
                let fut = self(gateway.clone(), $($ty,)*);
                Box::pin(async move { fut.await.into_reply() })
            }
        }
    };
}

impl_handler!();
impl_handler!(T1);
impl_handler!(T1, T2);
impl_handler!(T1, T2, T3);
impl_handler!(T1, T2, T3, T4);
impl_handler!(T1, T2, T3, T4, T5);
impl_handler!(T1, T2, T3, T4, T5, T6);
impl_handler!(T1, T2, T3, T4, T5, T6, T7);
impl_handler!(T1, T2, T3, T4, T5, T6, T7, T8);
impl_handler!(T1, T2, T3, T4, T5, T6, T7, T8, T9);
impl_handler!(T1, T2, T3, T4, T5, T6, T7, T8, T9, T10);
impl_handler!(T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11);
impl_handler!(T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11, T12);

/// A handler with its gateway and its type parameters erased.
pub(crate) trait ErasedHandler: Send + Sync + 'static {
    fn call(&self, ctx: &MessageContext) -> BoxFuture<'static, Reply>;
}

pub(crate) struct Bound<G, H, T> {
    pub(crate) gateway: Arc<G>,
    pub(crate) handler: H,
    pub(crate) _args: std::marker::PhantomData<fn() -> T>,
}

impl<G, H, T> ErasedHandler for Bound<G, H, T>
where
    G: Send + Sync + 'static,
    H: Handler<G, T>,
    T: 'static,
{
    fn call(&self, ctx: &MessageContext) -> BoxFuture<'static, Reply> {
        self.handler.call(&self.gateway, ctx)
    }
}
