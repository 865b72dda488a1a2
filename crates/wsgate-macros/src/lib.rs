//! `#[gateway]` and `#[subscribe_message("event")]`: Nest's `@WebSocketGateway()` and
//! `@SubscribeMessage()` for [wsgate](https://docs.rs/wsgate).
//!
//! They expand to an `impl wsgate::Gateway` whose `register` calls `Routes::on` once per
//! `#[subscribe_message]` method: the same registration a user can write by hand.
//!
//! ```
//! use wsgate::{gateway, Connection, Data, WsException, WsResponse};
//!
//! #[derive(serde::Deserialize)]
//! struct Ping { n: u32 }
//!
//! struct PingGateway;
//!
//! #[gateway(namespace = "/ping")]
//! impl PingGateway {
//!     #[subscribe_message("ping")]
//!     async fn ping(&self, Data(ping): Data<Ping>) -> Result<WsResponse<u32>, WsException> {
//!         if ping.n == 0 {
//!             return Err(WsException::new("Zero is not allowed."));
//!         }
//!         Ok(WsResponse::new("pong", ping.n + 1))
//!     }
//!
//!     #[on_connect]
//!     async fn hello(&self, conn: &Connection) {
//!         let _ = conn.emit("hello", "welcome");
//!     }
//! }
//! # fn main() {}
//! ```

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{format_ident, quote, quote_spanned};
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{
    Attribute, Expr, FnArg, Ident, ImplItem, ImplItemFn, ItemImpl, LitStr, Path, Token,
    parse_macro_input,
};

/// Makes an `impl` block a gateway: every `#[subscribe_message("event")]` method becomes the
/// handler of `event`.
///
/// Arguments (all optional): `namespace = "/chat"`, or `options = path::to::fn` naming a
/// `fn(&Self) -> wsgate::GatewayOptions` for middleware, guards and filters.
///
/// Inside the block:
/// - `#[subscribe_message("event")]` on a method taking `&self` (or `self: Arc<Self>`) and
///   extractors (`Data<T>`, `Valid<T>`, `Connection`, `Ext<User>`, `Server`, ...), returning
///   anything that implements `IntoReply`;
/// - `#[use_guards(guard, ...)]` beside it adds guards to that handler;
/// - `#[after_init]` (`&self, &Server`), `#[on_connect]` and `#[on_disconnect]`
///   (`&self, &Connection`) mark the lifecycle hooks.
#[proc_macro_attribute]
pub fn gateway(args: TokenStream, input: TokenStream) -> TokenStream {
    let args = parse_macro_input!(args as GatewayArgs);
    let item = parse_macro_input!(input as ItemImpl);
    expand(&args, item).unwrap_or_else(syn::Error::into_compile_error).into()
}

/// Marks a method of a `#[gateway]` impl block as the handler of an event (Nest's
/// `@SubscribeMessage`). It is read by `#[gateway]`; alone it is an error.
#[proc_macro_attribute]
pub fn subscribe_message(_args: TokenStream, input: TokenStream) -> TokenStream {
    misplaced("subscribe_message", input)
}

fn misplaced(name: &str, input: TokenStream) -> TokenStream {
    let input = TokenStream2::from(input);
    let msg = format!("`#[{name}]` only works on a method inside a `#[gateway]` impl block");
    quote! { ::core::compile_error!(#msg); #input }.into()
}

#[derive(Default)]
struct GatewayArgs {
    namespace: Option<LitStr>,
    options: Option<Path>,
}

impl Parse for GatewayArgs {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut args = GatewayArgs::default();
        while !input.is_empty() {
            let key: Ident = input.parse()?;
            input.parse::<Token![=]>()?;
            match key.to_string().as_str() {
                "namespace" => args.namespace = Some(input.parse()?),
                "options" => args.options = Some(input.parse()?),
                _ => {
                    return Err(syn::Error::new(
                        key.span(),
                        "unknown gateway argument: expected `namespace = \"/...\"` or `options = path`",
                    ));
                }
            }
            if !input.is_empty() {
                input.parse::<Token![,]>()?;
            }
        }
        if let (Some(ns), Some(_)) = (&args.namespace, &args.options) {
            return Err(syn::Error::new(
                ns.span(),
                "give either `namespace` or `options` (set the namespace in the options)",
            ));
        }
        Ok(args)
    }
}

enum Hook {
    AfterInit,
    OnConnect,
    OnDisconnect,
}

struct Handler {
    event: LitStr,
    guards: Vec<Expr>,
    method: Ident,
    receiver: Receiver,
    is_async: bool,
    args: Vec<syn::Type>,
    span: Span,
}

enum Receiver {
    Ref,
    Arc,
    None,
}

fn expand(args: &GatewayArgs, mut item: ItemImpl) -> syn::Result<TokenStream2> {
    if let Some((_, path, _)) = &item.trait_ {
        return Err(syn::Error::new(path.span(), "`#[gateway]` goes on an inherent impl block"));
    }
    let mut handlers = Vec::new();
    let mut hooks: Vec<(Hook, Ident, bool, Span)> = Vec::new();
    for impl_item in &mut item.items {
        let ImplItem::Fn(f) = impl_item else { continue };
        let mut event = None;
        let mut guards = Vec::new();
        let mut kept = Vec::with_capacity(f.attrs.len());
        for attr in std::mem::take(&mut f.attrs) {
            match attr_name(&attr).as_deref() {
                Some("subscribe_message") => {
                    if event.is_some() {
                        return Err(syn::Error::new(attr.span(), "one event per handler"));
                    }
                    event = Some(attr.parse_args::<LitStr>()?);
                }
                Some("use_guards") => {
                    let list =
                        attr.parse_args_with(Punctuated::<Expr, Token![,]>::parse_terminated)?;
                    guards.extend(list);
                }
                Some(name @ ("after_init" | "on_connect" | "on_disconnect")) => {
                    let hook = match name {
                        "after_init" => Hook::AfterInit,
                        "on_connect" => Hook::OnConnect,
                        _ => Hook::OnDisconnect,
                    };
                    hooks.push((hook, f.sig.ident.clone(), f.sig.asyncness.is_some(), attr.span()));
                }
                _ => kept.push(attr),
            }
        }
        f.attrs = kept;
        match event {
            Some(event) => handlers.push(handler(f, event, guards)?),
            None if !guards.is_empty() => {
                return Err(syn::Error::new(
                    f.sig.ident.span(),
                    "`#[use_guards]` needs `#[subscribe_message]` on the same method",
                ));
            }
            None => {}
        }
    }

    let self_ty = &item.self_ty;
    let (impl_generics, _, where_clause) = item.generics.split_for_impl();
    let options = match (&args.namespace, &args.options) {
        (_, Some(path)) => quote! { fn options(&self) -> ::wsgate::GatewayOptions { #path(self) } },
        (Some(ns), None) => quote! {
            fn options(&self) -> ::wsgate::GatewayOptions {
                ::wsgate::GatewayOptions::new().namespace(#ns)
            }
        },
        (None, None) => quote! {},
    };
    let registrations = handlers.iter().map(registration);
    let hooks = hooks.iter().map(|(hook, method, is_async, span)| {
        let call = if *is_async { quote! { .await } } else { quote! {} };
        let (name, param, ty) = match hook {
            Hook::AfterInit => (quote!(after_init), quote!(server), quote!(::wsgate::Server)),
            Hook::OnConnect => (quote!(on_connect), quote!(conn), quote!(::wsgate::Connection)),
            Hook::OnDisconnect => (quote!(on_disconnect), quote!(conn), quote!(::wsgate::Connection)),
        };
        quote_spanned! {*span=>
            #[allow(clippy::manual_async_fn)]
            fn #name(&self, #param: &#ty) -> impl ::core::future::Future<Output = ()> + ::core::marker::Send {
                async move { let _ = self.#method(#param) #call; }
            }
        }
    });

    Ok(quote! {
        #item

        impl #impl_generics ::wsgate::Gateway for #self_ty #where_clause {
            #options

            fn register(routes: &mut ::wsgate::Routes<Self>) {
                #(#registrations)*
            }

            #(#hooks)*
        }
    })
}

fn attr_name(attr: &Attribute) -> Option<String> {
    attr.path().segments.last().map(|s| s.ident.to_string())
}

fn handler(f: &ImplItemFn, event: LitStr, guards: Vec<Expr>) -> syn::Result<Handler> {
    let mut receiver = Receiver::None;
    let mut args = Vec::new();
    for input in &f.sig.inputs {
        match input {
            FnArg::Receiver(r) if r.reference.is_some() && r.mutability.is_none() => {
                receiver = Receiver::Ref;
            }
            FnArg::Receiver(r) if r.colon_token.is_some() && r.reference.is_none() => {
                receiver = Receiver::Arc;
            }
            FnArg::Receiver(r) => {
                return Err(syn::Error::new(
                    r.span(),
                    "a handler takes `&self` or `self: Arc<Self>`: handlers run concurrently",
                ));
            }
            FnArg::Typed(t) => args.push((*t.ty).clone()),
        }
    }
    Ok(Handler {
        event,
        guards,
        method: f.sig.ident.clone(),
        receiver,
        is_async: f.sig.asyncness.is_some(),
        args,
        span: f.sig.ident.span(),
    })
}

fn registration(h: &Handler) -> TokenStream2 {
    let Handler { event, guards, method, receiver, is_async, args, span } = h;
    let names: Vec<Ident> = (0..args.len()).map(|i| format_ident!("__arg{}", i)).collect();
    let call = match receiver {
        Receiver::Ref | Receiver::Arc => quote! { gateway.#method(#(#names),*) },
        Receiver::None => quote! { Self::#method(#(#names),*) },
    };
    let call = if *is_async {
        quote! { #call.await }
    } else {
        call
    };
    let gateway = match receiver {
        Receiver::None => quote! { _gateway },
        _ => quote! { gateway },
    };
    quote_spanned! {*span=>
        routes
            .on(#event, |#gateway: ::wsgate::__private::Arc<Self>, #(#names: #args),*| async move { #call })
            #(.guard(#guards))*;
    }
}
