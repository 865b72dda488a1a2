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
/// Arguments (all optional): `namespace = "/chat"` (or `namespace_pattern = r"^/entry-\d+$"`
/// for every namespace matching a regular expression) and `port = 4000` (a listener of its own:
/// `App::on_port`), or `options = path::to::fn` naming a
/// `fn(&Self) -> wsgate::GatewayOptions` for middleware, guards and filters; and
/// `pushes("commentCreated": Comment, EVENT_CONST: Other, ...)`, the events the gateway emits
/// on its own, for its description.
///
/// Inside the block:
/// - `#[subscribe_message("event")]` on a method taking `&self` (or `self: Arc<Self>`) and
///   extractors (`Data<T>`, `Valid<T>`, `Connection`, `Ext<User>`, `Server`, ...), returning
///   anything that implements `IntoReply`. Its description (`wsgate::describe`) is read off the
///   signature: the `T` of `Data<T>` / `Valid<T>`, and the return type (`WsResponse<T>` replies
///   with the handler's own event, or the one `#[subscribe_message("e", reply = "other")]`
///   names; `Ack<T>` and plain values answer the ack; `()` nothing; `Result` and `Option` are
///   looked through), and its doc comment;
/// - `#[throws("Missing entry id.", NOT_FOUND, ...)]` beside it declares its exceptions'
///   messages, for its description;
/// - `#[use_guards(guard, ...)]` beside it adds guards to that handler, and
///   `#[use_interceptors(interceptor, ...)]` interceptors (inside the gateway's);
/// - `#[fallback]` instead of `#[subscribe_message]` makes the method the handler of the
///   events no route of the namespace serves (take the name with the `EventName` extractor);
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
    namespace_pattern: Option<LitStr>,
    port: Option<syn::LitInt>,
    options: Option<Path>,
    pushes: Vec<(Expr, syn::Type)>,
}

impl Parse for GatewayArgs {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut args = GatewayArgs::default();
        while !input.is_empty() {
            let key: Ident = input.parse()?;
            if key == "pushes" {
                let content;
                syn::parenthesized!(content in input);
                while !content.is_empty() {
                    let event: Expr = if content.peek(LitStr) {
                        Expr::Lit(syn::ExprLit { attrs: Vec::new(), lit: content.parse()? })
                    } else {
                        Expr::Path(syn::ExprPath {
                            attrs: Vec::new(),
                            qself: None,
                            path: content.parse()?,
                        })
                    };
                    content.parse::<Token![:]>()?;
                    args.pushes.push((event, content.parse()?));
                    if !content.is_empty() {
                        content.parse::<Token![,]>()?;
                    }
                }
                if !input.is_empty() {
                    input.parse::<Token![,]>()?;
                }
                continue;
            }
            input.parse::<Token![=]>()?;
            match key.to_string().as_str() {
                "namespace" => args.namespace = Some(input.parse()?),
                "namespace_pattern" => args.namespace_pattern = Some(input.parse()?),
                "port" => args.port = Some(input.parse()?),
                "options" => args.options = Some(input.parse()?),
                _ => {
                    return Err(syn::Error::new(
                        key.span(),
                        "unknown gateway argument: expected `namespace = \"/...\"`, `namespace_pattern = \"...\"`, `port = 4000`, `options = path` or `pushes(\"event\": Type, ...)`",
                    ));
                }
            }
            if !input.is_empty() {
                input.parse::<Token![,]>()?;
            }
        }
        let namespaces = [&args.namespace, &args.namespace_pattern];
        if let (Some(port), Some(_)) = (&args.port, &args.options) {
            return Err(syn::Error::new(
                port.span(),
                "give either `port` or `options` (set the port in the options)",
            ));
        }
        if let (Some(ns), Some(_)) = (namespaces.iter().find_map(|n| n.as_ref()), &args.options) {
            return Err(syn::Error::new(
                ns.span(),
                "give either `namespace` / `namespace_pattern` or `options` (set the namespace in the options)",
            ));
        }
        if let (Some(_), Some(pattern)) = (&args.namespace, &args.namespace_pattern) {
            return Err(syn::Error::new(
                pattern.span(),
                "give either `namespace` or `namespace_pattern`",
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
    /// `None` for the `#[fallback]`.
    event: Option<LitStr>,
    reply: Option<LitStr>,
    guards: Vec<Expr>,
    interceptors: Vec<Expr>,
    throws: Vec<Expr>,
    doc: String,
    output: Option<syn::Type>,
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
        let mut fallback = None;
        let mut guards = Vec::new();
        let mut interceptors = Vec::new();
        let mut throws = Vec::new();
        let mut kept = Vec::with_capacity(f.attrs.len());
        for attr in std::mem::take(&mut f.attrs) {
            match attr_name(&attr).as_deref() {
                Some("subscribe_message") => {
                    if event.is_some() {
                        return Err(syn::Error::new(attr.span(), "one event per handler"));
                    }
                    event = Some(attr.parse_args::<SubscribeArgs>()?);
                }
                Some("fallback") => fallback = Some(attr.span()),
                Some("use_interceptors") => {
                    let list =
                        attr.parse_args_with(Punctuated::<Expr, Token![,]>::parse_terminated)?;
                    interceptors.extend(list);
                }
                Some("throws") => {
                    let list =
                        attr.parse_args_with(Punctuated::<Expr, Token![,]>::parse_terminated)?;
                    throws.extend(list);
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
        match (event, fallback) {
            (Some(_), Some(span)) => {
                return Err(syn::Error::new(
                    span,
                    "a handler is either `#[subscribe_message]` or `#[fallback]`, not both",
                ));
            }
            (Some(event), None) => {
                handlers.push(handler(f, Some(event), guards, interceptors, throws)?);
            }
            (None, Some(_)) => handlers.push(handler(f, None, guards, interceptors, throws)?),
            (None, None)
                if !guards.is_empty() || !throws.is_empty() || !interceptors.is_empty() =>
            {
                return Err(syn::Error::new(
                    f.sig.ident.span(),
                    "`#[use_guards]`, `#[use_interceptors]` and `#[throws]` need `#[subscribe_message]` or `#[fallback]` on the same method",
                ));
            }
            (None, None) => {}
        }
    }

    let self_ty = &item.self_ty;
    let (impl_generics, _, where_clause) = item.generics.split_for_impl();
    let options = if let Some(path) = &args.options {
        quote! { fn options(&self) -> ::wsgate::GatewayOptions { #path(self) } }
    } else if args.namespace.is_none() && args.namespace_pattern.is_none() && args.port.is_none() {
        quote! {}
    } else {
        let namespace = args.namespace.iter().map(|ns| quote! { .namespace(#ns) });
        let pattern = args.namespace_pattern.iter().map(|p| quote! { .namespace_pattern(#p) });
        let port = args.port.iter().map(|p| quote! { .port(#p) });
        quote! {
            fn options(&self) -> ::wsgate::GatewayOptions {
                ::wsgate::GatewayOptions::new() #(#namespace)* #(#pattern)* #(#port)*
            }
        }
    };
    let registrations = handlers.iter().map(registration);
    let pushes = args.pushes.iter().map(|(event, ty)| {
        quote_spanned! {ty.span()=> routes.pushes::<#ty>(#event); }
    });
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
                #(#pushes)*
            }

            #(#hooks)*
        }
    })
}

fn attr_name(attr: &Attribute) -> Option<String> {
    attr.path().segments.last().map(|s| s.ident.to_string())
}

/// `#[subscribe_message("event")]` or `#[subscribe_message("event", reply = "other")]`.
struct SubscribeArgs {
    event: LitStr,
    reply: Option<LitStr>,
}

impl Parse for SubscribeArgs {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let event = input.parse()?;
        let mut reply = None;
        if input.parse::<Option<Token![,]>>()?.is_some() && !input.is_empty() {
            let key: Ident = input.parse()?;
            if key != "reply" {
                return Err(syn::Error::new(key.span(), "expected `reply = \"event\"`"));
            }
            input.parse::<Token![=]>()?;
            reply = Some(input.parse()?);
            input.parse::<Option<Token![,]>>()?;
        }
        Ok(Self { event, reply })
    }
}

/// The method's doc comment, lines joined.
fn doc_comment(attrs: &[Attribute]) -> String {
    let lines = attrs.iter().filter(|a| a.path().is_ident("doc")).filter_map(|a| match &a.meta {
        syn::Meta::NameValue(nv) => match &nv.value {
            Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(s), .. }) => Some(s.value()),
            _ => None,
        },
        _ => None,
    });
    lines
        .map(|l| l.strip_prefix(' ').map(str::to_owned).unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
}

fn handler(
    f: &ImplItemFn,
    args: Option<SubscribeArgs>,
    guards: Vec<Expr>,
    interceptors: Vec<Expr>,
    throws: Vec<Expr>,
) -> syn::Result<Handler> {
    let (event, reply) = match args {
        Some(SubscribeArgs { event, reply }) => (Some(event), reply),
        None => (None, None),
    };
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
        reply,
        guards,
        interceptors,
        throws,
        doc: doc_comment(&f.attrs),
        output: match &f.sig.output {
            syn::ReturnType::Default => None,
            syn::ReturnType::Type(_, ty) => Some((**ty).clone()),
        },
        method: f.sig.ident.clone(),
        receiver,
        is_async: f.sig.asyncness.is_some(),
        args,
        span: f.sig.ident.span(),
    })
}

fn registration(h: &Handler) -> TokenStream2 {
    let Handler {
        event,
        reply,
        guards,
        interceptors,
        throws,
        doc,
        output,
        method,
        receiver,
        is_async,
        args,
        span,
    } = h;
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
    let closure = quote! {
        |#gateway: ::wsgate::__private::Arc<Self>, #(#names: #args),*| async move { #call }
    };
    // The fallback serves no event of its own: nothing to describe.
    let Some(event) = event else {
        return quote_spanned! {*span=>
            routes.fallback(#closure) #(.guard(#guards))* #(.interceptor(#interceptors))*;
        };
    };
    let data = args.iter().find_map(|ty| {
        let inner = wrapped(ty, &["Data", "Valid"])?;
        Some(quote_spanned! {inner.span()=> route.data_schema((&::wsgate::__private::Probe::<#inner>::new()).schema()); })
    });
    let reply_event = reply.as_ref().unwrap_or(event);
    let answer = answer(output.as_ref(), reply_event);
    let describe = (!doc.trim().is_empty()).then(|| quote! { route.describe(#doc); });
    quote_spanned! {*span=>
        {
            #[allow(unused_imports)]
            use ::wsgate::__private::{ViaAny as _, ViaSchema as _};
            #[allow(unused_variables)]
            let route = routes
                .on(#event, #closure)
                #(.guard(#guards))*
                #(.interceptor(#interceptors))*;
            #describe
            #data
            #answer
            #(route.throws(#throws);)*
        }
    }
}

/// `T` when `ty` is `Name<T>` for one of `names` (by the path's last segment).
fn wrapped<'a>(ty: &'a syn::Type, names: &[&str]) -> Option<&'a syn::Type> {
    let syn::Type::Path(path) = ty else { return None };
    let last = path.path.segments.last()?;
    if !names.iter().any(|n| last.ident == n) {
        return None;
    }
    let syn::PathArguments::AngleBracketed(args) = &last.arguments else { return None };
    args.args.iter().find_map(|a| match a {
        syn::GenericArgument::Type(t) => Some(t),
        _ => None,
    })
}

/// The description of what a handler returning `output` sends back: `Result` and `Option`
/// looked through, `WsResponse<T>` a reply event, `()` nothing, `Ack<T>` or any other value
/// the ack; `impl Trait` and the like unknown.
fn answer(output: Option<&syn::Type>, reply_event: &LitStr) -> TokenStream2 {
    let Some(mut ty) = output else {
        return quote! { route.answer(::wsgate::describe::Answer::Nothing); };
    };
    while let Some(inner) = wrapped(ty, &["Result", "Option"]) {
        ty = inner;
    }
    if let syn::Type::Tuple(t) = ty
        && t.elems.is_empty()
    {
        return quote! { route.answer(::wsgate::describe::Answer::Nothing); };
    }
    if let Some(inner) = wrapped(ty, &["WsResponse"]) {
        return quote_spanned! {inner.span()=>
            route.answer(::wsgate::describe::Answer::Event {
                event: #reply_event.into(),
                payload: (&::wsgate::__private::Probe::<#inner>::new()).schema(),
            });
        };
    }
    if let syn::Type::Path(path) = ty
        && path.path.segments.last().is_some_and(|s| s.ident == "Reply")
    {
        return quote! {};
    }
    let value = wrapped(ty, &["Ack"]).unwrap_or(ty);
    match value {
        syn::Type::Path(_)
        | syn::Type::Reference(_)
        | syn::Type::Array(_)
        | syn::Type::Slice(_) => {
            quote_spanned! {value.span()=>
                route.answer(::wsgate::describe::Answer::Ack {
                    payload: (&::wsgate::__private::Probe::<#value>::new()).schema(),
                });
            }
        }
        _ => quote! {},
    }
}
