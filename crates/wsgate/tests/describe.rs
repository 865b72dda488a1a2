//! The description `#[gateway]` reads off the handlers, and the AsyncAPI document and
//! TypeScript made from it.
#![allow(missing_docs, clippy::unwrap_used)]

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use wsgate::asyncapi::AsyncApi;
use wsgate::describe::{Answer, Schema};
use wsgate::{Ack, App, Connection, Data, Valid, WsError, WsException, WsResponse, gateway};

/// A note.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct Note {
    /// The note's id.
    id: i64,
    /// Its text.
    text: String,
    /// Who wrote it, if known.
    author_name: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema, validator::Validate)]
#[serde(rename_all = "camelCase")]
struct NoteQuery {
    note_id: Option<i64>,
}

/// No schema: described as any value.
#[derive(Debug, Deserialize)]
struct Opaque {}

struct Notes;

#[gateway(namespace = "/notes", pushes("noteAdded": Note, "notesCleared": Vec<Note>))]
impl Notes {
    /// Shows one note.
    ///
    /// The note must exist.
    #[subscribe_message("showNote")]
    #[throws("Missing note id.", "Note not found.")]
    async fn show(&self, Data(q): Data<NoteQuery>) -> Result<WsResponse<Note>, WsError> {
        let _ = q.note_id.ok_or_else(|| WsException::new("Missing note id."))?;
        Err(WsException::new("Note not found.").into())
    }

    #[subscribe_message("listNotes", reply = "notes")]
    async fn list(&self) -> WsResponse<Vec<Note>> {
        WsResponse::new("notes", Vec::new())
    }

    #[subscribe_message("addNote")]
    async fn add(&self, _conn: Connection, Valid(_q): Valid<NoteQuery>) -> Ack<Note> {
        Ack(Note { id: 1, text: String::new(), author_name: None })
    }

    #[subscribe_message("count")]
    fn count(&self) -> Option<u32> {
        Some(3)
    }

    #[subscribe_message("forget")]
    async fn forget(&self, Data(_o): Data<Opaque>) -> Result<(), WsException> {
        Ok(())
    }

    #[subscribe_message("poke")]
    async fn poke(&self) -> wsgate::Reply {
        wsgate::Reply::Nothing
    }
}

/// Registered by hand, described by hand.
struct Manual;

impl wsgate::Gateway for Manual {
    fn register(routes: &mut wsgate::Routes<Self>) {
        routes
            .on("ping", |_g: std::sync::Arc<Self>, Data(n): Data<u32>| async move { Ack(n + 1) })
            .describe("Adds one.")
            .data::<u32>()
            .acks::<u32>();
        routes.on("silent", |_g: std::sync::Arc<Self>| async move {});
        routes.push_schema("tick", Schema::from_json(json!({ "type": "integer" })));
    }
}

async fn app() -> App {
    App::builder().gateway(Notes).gateway(Manual).build().await.unwrap()
}

#[tokio::test]
async fn the_description_comes_from_the_signatures() {
    let description = app().await.description();
    let names: Vec<&str> = description.namespaces.iter().map(|ns| ns.namespace.as_str()).collect();
    assert_eq!(names, ["/", "/notes"]);
    let notes = description.namespace("/notes").unwrap();
    let events: Vec<&str> = notes.handlers.iter().map(|h| h.event.as_str()).collect();
    assert_eq!(events, ["addNote", "count", "forget", "listNotes", "poke", "showNote"]);
    let note_ref = json!({ "$ref": "#/components/schemas/Note" });

    let show = &notes.handlers[5];
    assert_eq!(show.summary.as_deref(), Some("Shows one note."));
    assert_eq!(show.description.as_deref(), Some("Shows one note.\n\nThe note must exist."));
    assert_eq!(
        show.data.as_ref().unwrap().json,
        json!({ "$ref": "#/components/schemas/NoteQuery" })
    );
    assert_eq!(show.exceptions, ["Missing note id.", "Note not found."]);
    match &show.answer {
        Answer::Event { event, payload } => {
            assert_eq!(event.as_str(), "showNote");
            assert_eq!(payload.json, note_ref);
        }
        other => panic!("{other:?}"),
    }

    // `reply = "notes"`, and a Vec of a named type refers to it.
    match &notes.handlers[3].answer {
        Answer::Event { event, payload } => {
            assert_eq!(event.as_str(), "notes");
            assert_eq!(payload.json, json!({ "type": "array", "items": note_ref }));
        }
        other => panic!("{other:?}"),
    }
    assert!(notes.handlers[3].data.is_none(), "listNotes reads no data");
    // `Ack<T>` and a plain value (through `Option`) go to the ack; `Valid<T>` is data.
    assert!(
        matches!(&notes.handlers[0].answer, Answer::Ack { payload } if payload.json == note_ref)
    );
    assert!(notes.handlers[0].data.as_ref().unwrap().documented);
    assert!(
        matches!(&notes.handlers[1].answer, Answer::Ack { payload } if payload.json["type"] == "integer")
    );
    // `Result<(), _>` answers nothing; a type without a schema is any value, and said so.
    assert_eq!(notes.handlers[2].answer, Answer::Nothing);
    assert!(!notes.handlers[2].data.as_ref().unwrap().documented);
    assert_eq!(notes.handlers[4].answer, Answer::Unknown, "a Reply says nothing of itself");

    let pushes: Vec<(&str, &Value)> =
        notes.pushes.iter().map(|p| (p.event.as_str(), &p.payload.json)).collect();
    assert_eq!(
        pushes,
        [
            ("noteAdded", &note_ref),
            ("notesCleared", &json!({ "type": "array", "items": note_ref }))
        ]
    );

    let note = &description.schemas["Note"];
    assert_eq!(note["required"], json!(["id", "text"]));
    assert_eq!(note["properties"]["id"]["description"], "The note's id.");
    assert!(description.schemas.contains_key("NoteQuery"));

    let root = description.namespace("/").unwrap();
    assert_eq!(root.handlers[0].summary.as_deref(), Some("Adds one."));
    assert_eq!(root.handlers[1].answer, Answer::Unknown);
    assert_eq!(root.pushes[0].payload.json, json!({ "type": "integer" }));

    assert_eq!(
        description.undocumented(),
        ["/ answer of silent", "/notes data of forget", "/notes answer of poke"]
    );
}

#[tokio::test]
async fn an_asyncapi_document_with_channels_operations_and_replies() {
    let doc = AsyncApi::new("notes", "1.2.3")
        .description("Notes, live.")
        .server(
            "websocket",
            json!({ "host": "localhost:3000", "protocol": "ws", "pathname": "/ws",
                    "security": [{ "$ref": "#/components/securitySchemes/token" }] }),
        )
        .security_scheme("token", json!({ "type": "httpApiKey", "name": "token", "in": "query" }))
        .document(&app().await.description());
    assert_eq!(doc["asyncapi"], "3.0.0");
    assert_eq!(doc["info"]["description"], "Notes, live.");
    let channel = &doc["channels"]["notes"];
    assert_eq!(channel["address"], "/notes");
    assert_eq!(channel["servers"], json!([{ "$ref": "#/servers/websocket" }]));
    assert_eq!(doc["channels"]["root"]["address"], "/");

    let show = &doc["operations"]["notes.showNote"];
    assert_eq!(show["action"], "receive");
    assert_eq!(show["summary"], "Shows one note.");
    assert_eq!(show["messages"], json!([{ "$ref": "#/channels/notes/messages/showNote" }]));
    assert_eq!(
        show["reply"]["messages"],
        json!([
            { "$ref": "#/channels/notes/messages/showNote.reply" },
            { "$ref": "#/channels/notes/messages/showNote.exception" },
        ])
    );
    let messages = &channel["messages"];
    assert_eq!(
        messages["showNote"]["payload"],
        json!({ "$ref": "#/components/schemas/NoteQuery" })
    );
    assert_eq!(messages["showNote.reply"]["name"], "showNote");
    assert_eq!(
        messages["showNote.exception"]["payload"]["allOf"][1]["properties"]["message"]["examples"],
        json!(["Missing note id.", "Note not found."])
    );
    assert_eq!(messages["listNotes.reply"]["name"], "notes");
    assert_eq!(messages["addNote.ack"]["name"], "addNote");
    assert_eq!(doc["operations"]["notes.forget"]["x-answer"], "nothing");
    assert_eq!(
        doc["operations"]["notes.forget"]["reply"]["messages"],
        json!([{ "$ref": "#/channels/notes/messages/exception" }])
    );

    let pushed = &doc["operations"]["notes.noteAdded"];
    assert_eq!(pushed["action"], "send");
    assert_eq!(messages["noteAdded"]["payload"], json!({ "$ref": "#/components/schemas/Note" }));
    assert_eq!(doc["operations"]["tick"]["action"], "send");

    assert!(doc["components"]["schemas"]["Note"].is_object());
    assert!(doc["components"]["schemas"]["WsExceptionBody"].is_object());
    assert_eq!(doc["components"]["securitySchemes"]["token"]["in"], "query");

    // Every reference points at something.
    fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r);
                }
                m.values().for_each(|v| refs(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(all.len() > 20);
    for r in all {
        let pointer = r.strip_prefix('#').unwrap();
        assert!(doc.pointer(pointer).is_some(), "{r} points nowhere");
    }
}

#[tokio::test]
async fn typescript_types_for_both_maps_and_the_named_schemas() {
    let ts = wsgate::typescript::module(&app().await.description(), "Generated.\nDo not edit.");
    assert!(ts.starts_with("// Generated.\n// Do not edit.\n"));
    let expect = [
        // Properties in alphabetical order (the description's JSON objects are sorted).
        "/** A note. */\nexport interface Note {\n  /** Who wrote it, if known. */\n  authorName?: string | null;\n  /** The note's id. */\n  id: number;\n  /** Its text. */\n  text: string;\n}",
        "export interface NotesClientToServerEvents {",
        "  addNote: (data: NoteQuery, ack: (answer: Note) => void) => void;",
        "  count: (data: unknown, ack: (answer: number) => void) => void;",
        "  /** Shows one note. */\n  showNote: (data: NoteQuery) => void;",
        "  listNotes: (data?: unknown) => void;",
        "export interface NotesServerToClientEvents {",
        "  notes: (data: Note[]) => void;",
        "  noteAdded: (data: Note, offset?: string) => void;",
        "  exception: (data: WsExceptionBody) => void;",
        "export interface ClientToServerEvents {\n  /** Adds one. */\n  ping: (data: number, ack: (answer: number) => void) => void;",
        "export class GatewaySocket<Out = ClientToServerEvents, In = ServerToClientEvents> {",
    ];
    for line in expect {
        assert!(ts.contains(line), "missing:\n{line}\n\nin:\n{ts}");
    }
}
