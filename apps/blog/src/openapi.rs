//! `GET /openapi.json`: the REST API as an OpenAPI 3.1 document, generated from the handlers'
//! `#[utoipa::path]` annotations and the models' schemas; `GET /docs`: a page that renders it,
//! compiled into the binary (no CDN).

use axum::response::Html;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::AppState;

/// Every REST error: `{"statusCode": 404, "message": "Entry not found."}`.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ErrorBody {
    /// The HTTP status, repeated.
    status_code: u16,
    /// What went wrong, for people: the field for a validation error.
    message: String,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "blog",
        description = "The wsgate reference application: users, entries and comments. \
            The same tokens open the gateways (plain WebSocket at `/` and `/ws`, Socket.IO at \
            `/socket.io/`), where members of the room `entry:{id}` receive `commentCreated`, \
            `commentUpdated` and `commentDeleted`."
    ),
    paths(
        crate::auth::register,
        crate::auth::login,
        crate::users::show,
        crate::entries::index,
        crate::entries::create,
        crate::entries::show,
        crate::entries::update,
        crate::entries::remove,
        crate::entries::authors,
        crate::comments::index,
        crate::comments::create,
        crate::comments::show,
        crate::comments::update,
        crate::comments::remove,
        crate::health::healthz,
        crate::metrics::metrics,
    ),
    components(schemas(ErrorBody)),
    modifiers(&BearerToken),
    tags(
        (name = "auth", description = "Register and log in: a JWT for the API and the gateways"),
        (name = "users", description = "Your own account"),
        (name = "entries", description = "Blog entries: read by all, written by their author"),
        (name = "comments", description = "Comments on an entry, pushed live to its room"),
        (name = "operations", description = "Health and metrics"),
    )
)]
struct ApiDoc;

/// The `bearer` security scheme the protected routes name.
struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let scheme = HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build();
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// The document, built once per request (it is small, and requests for it are rare).
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// `/openapi.json` and `/docs`, public.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/openapi.json", get(|| async { Json(document()) }))
        .route("/docs", get(|| async { Html(include_str!("../web/docs.html")) }))
}
