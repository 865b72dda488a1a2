//! Several arguments and binary attachments, as Socket.IO has them:
//! `socket.emit("upload", name, buffer, (ok, id) => …)`.
//!
//! Outbound, data is serialised once into JSON where each `bytes::Bytes` (anything serde
//! serialises as bytes) becomes a placeholder `{"_placeholder":true,"num":N}` and its bytes
//! an attachment: the Socket.IO adapter sends them as binary frames after the packet (or
//! `b<base64>` packets over long-polling), the plain WebSocket adapter as binary frames after
//! the JSON frame. [`Args`] at the top of the data spreads it over several arguments.
//!
//! Inbound, [`Data`](crate::Data), [`Valid`](crate::Valid) and [`Args`] resolve the
//! placeholders: a field that reads bytes (`bytes::Bytes`, `serde_bytes::ByteBuf`) reads its
//! attachment in place; read as anything else (`serde_json::Value`), a placeholder is the
//! object it is.
//!
//! Data without `Args` and without bytes is plain JSON, serialised as before: a walk over the
//! value (no writing, no allocation) finds neither, and `serde_json` writes it as it did.

use std::any::{Any, TypeId};
use std::fmt;
use std::io;

use bytes::Bytes;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess};
use serde::ser::{self, Impossible, Serialize, Serializer};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::message::Payload;

/// Several arguments: `Args((a, b))` is Socket.IO's `emit("e", a, b)` and `callback(a, b)`.
///
/// - **Outbound**, as the data of a [`WsResponse`](crate::WsResponse), an [`Ack`](crate::Ack),
///   an emit or a request of the server's: `T` serialises to a JSON array (a tuple, a `Vec`,
///   an array), whose items are the arguments. Over plain WebSocket, `data` is that array.
/// - **Inbound**, as a handler argument: the message's arguments as `T` (a tuple, a `Vec`…),
///   however many the client sent (one included), binary attachments resolved:
///   `Args((name, file)): Args<(String, Bytes)>`.
///
/// `Args` only spreads at the top of the data; nested, it is its array.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Args<T>(pub T);

/// The name [`Args`] serialises under, which [`to_args`] recognises; serde_json and every
/// other serializer see its array.
const ARGS: &str = "$wsgate::Args";

impl<T: Serialize> Serialize for Args<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_newtype_struct(ARGS, &self.0)
    }
}

/// How an outbound message's data maps to arguments.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arity {
    /// The data is one argument (the common case).
    #[default]
    One,
    /// The data is a JSON array whose items are the arguments ([`Args`]).
    Several,
}

/// What an outbound message carries beside its JSON data: its [`Arity`] and the binary
/// attachments its placeholders stand for. The default (one argument, no attachments) is the
/// common case and allocates nothing. In a broker's JSON envelope, the attachments are
/// arrays of byte values.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Extras {
    /// One argument or several.
    #[serde(default)]
    pub arity: Arity,
    /// The attachments, in the order of the placeholders' `num`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub binary: Vec<Bytes>,
}

impl Extras {
    /// One argument without attachments.
    pub fn is_plain(&self) -> bool {
        self.arity == Arity::One && self.binary.is_empty()
    }
}

/// `make()` as a `T`, when `T` is the raw JSON ([`Payload`]) it makes; `None` (and `make`
/// not called) for any other type. What lets data that is JSON already go through unread.
pub(crate) fn raw_as<T: 'static>(make: impl FnOnce() -> Payload) -> Option<T> {
    if TypeId::of::<T>() != TypeId::of::<Payload>() {
        return None;
    }
    let mut slot = Some(make());
    (&mut slot as &mut dyn Any).downcast_mut::<Option<T>>()?.take()
}

/// `value` itself when it is raw JSON ([`Payload`]): data made JSON already needs no
/// serialising. Otherwise `value`, given back.
pub(crate) fn raw_payload<T: 'static>(value: T) -> Result<Payload, T> {
    if TypeId::of::<T>() != TypeId::of::<Payload>() {
        return Err(value);
    }
    let mut slot = Some(value);
    let raw = (&mut slot as &mut dyn Any).downcast_mut::<Option<Payload>>().and_then(Option::take);
    match (raw, slot) {
        (Some(raw), _) => Ok(raw),
        (None, Some(value)) => Err(value),
        // The slot is given up only to the raw JSON.
        (None, None) => unreachable!("a value is in the slot or taken as raw JSON"),
    }
}

/// Serialises `value` as outbound data: its JSON with placeholders for bytes, and its extras
/// (several arguments when it is an [`Args`]).
pub fn to_args<T: Serialize + ?Sized>(value: &T) -> Result<(Payload, Extras), serde_json::Error> {
    if value.serialize(Walk { top: true }).is_ok() {
        // Neither `Args` nor bytes: plain JSON, without validating what serde_json wrote.
        return Ok((serde_json::value::to_raw_value(value)?, Extras::default()));
    }
    let mut out = Vec::with_capacity(128);
    let mut binary = Vec::new();
    let arity = match value.serialize(Probe { out: &mut out, binary: &mut binary }) {
        Ok(()) => Arity::Several,
        Err(Probed::Json(e)) => return Err(e),
        Err(Probed::NotArgs) => {
            value.serialize(&mut placeholders(&mut out, &mut binary))?;
            Arity::One
        }
    };
    // serde_json writes UTF-8.
    let text = String::from_utf8(out).map_err(|e| ser::Error::custom(e.to_string()))?;
    let data = RawValue::from_string(text)?;
    Ok((data, Extras { arity, binary }))
}

fn placeholders<'a>(
    out: &'a mut Vec<u8>,
    binary: &'a mut Vec<Bytes>,
) -> serde_json::Serializer<&'a mut Vec<u8>, Placeholders<'a>> {
    serde_json::Serializer::with_formatter(out, Placeholders { binary })
}

/// serde_json's compact output, with each byte array written as a placeholder and kept.
struct Placeholders<'a> {
    binary: &'a mut Vec<Bytes>,
}

impl serde_json::ser::Formatter for Placeholders<'_> {
    fn write_byte_array<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        value: &[u8],
    ) -> io::Result<()> {
        let num = self.binary.len();
        self.binary.push(Bytes::copy_from_slice(value));
        write!(w, "{{\"_placeholder\":true,\"num\":{num}}}")
    }
}

/// Why [`Probe`] stopped: the data is not an [`Args`] (the usual answer, at once), or it was
/// and failed to serialise.
#[derive(Debug)]
enum Probed {
    NotArgs,
    Json(serde_json::Error),
}

impl fmt::Display for Probed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotArgs => f.write_str("not Args"),
            Self::Json(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for Probed {}

impl ser::Error for Probed {
    fn custom<M: fmt::Display>(msg: M) -> Self {
        Self::Json(serde_json::Error::custom(msg))
    }
}

/// A serializer that only accepts an [`Args`], which it writes; anything else is
/// [`Probed::NotArgs`] at its first call.
struct Probe<'a> {
    out: &'a mut Vec<u8>,
    binary: &'a mut Vec<Bytes>,
}

macro_rules! not_args {
    ($($method:ident($($arg:ty),*) -> $ok:ty;)*) => {$(
        fn $method(self, $(_: $arg),*) -> Result<$ok, Probed> {
            Err(Probed::NotArgs)
        }
    )*};
}

impl<'a> Serializer for Probe<'a> {
    type Ok = ();
    type Error = Probed;
    type SerializeSeq = Impossible<(), Probed>;
    type SerializeTuple = Impossible<(), Probed>;
    type SerializeTupleStruct = Impossible<(), Probed>;
    type SerializeTupleVariant = Impossible<(), Probed>;
    type SerializeMap = Impossible<(), Probed>;
    type SerializeStruct = Impossible<(), Probed>;
    type SerializeStructVariant = Impossible<(), Probed>;

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<(), Probed> {
        if name != ARGS {
            return Err(Probed::NotArgs);
        }
        value.serialize(&mut placeholders(self.out, self.binary)).map_err(Probed::Json)
    }

    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<(), Probed> {
        Err(Probed::NotArgs)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<(), Probed> {
        Err(Probed::NotArgs)
    }

    not_args! {
        serialize_bool(bool) -> ();
        serialize_i8(i8) -> ();
        serialize_i16(i16) -> ();
        serialize_i32(i32) -> ();
        serialize_i64(i64) -> ();
        serialize_i128(i128) -> ();
        serialize_u8(u8) -> ();
        serialize_u16(u16) -> ();
        serialize_u32(u32) -> ();
        serialize_u64(u64) -> ();
        serialize_u128(u128) -> ();
        serialize_f32(f32) -> ();
        serialize_f64(f64) -> ();
        serialize_char(char) -> ();
        serialize_str(&str) -> ();
        serialize_bytes(&[u8]) -> ();
        serialize_none() -> ();
        serialize_unit() -> ();
        serialize_unit_struct(&'static str) -> ();
        serialize_unit_variant(&'static str, u32, &'static str) -> ();
        serialize_seq(Option<usize>) -> Self::SerializeSeq;
        serialize_tuple(usize) -> Self::SerializeTuple;
        serialize_tuple_struct(&'static str, usize) -> Self::SerializeTupleStruct;
        serialize_tuple_variant(&'static str, u32, &'static str, usize) -> Self::SerializeTupleVariant;
        serialize_map(Option<usize>) -> Self::SerializeMap;
        serialize_struct(&'static str, usize) -> Self::SerializeStruct;
        serialize_struct_variant(&'static str, u32, &'static str, usize) -> Self::SerializeStructVariant;
    }
}

/// A serializer that writes nothing and fails at the first bytes, or at an [`Args`] at the
/// top; a value's own error fails it too (the full serialisation then reports it).
#[derive(Clone, Copy)]
struct Walk {
    top: bool,
}

const INSIDE: Walk = Walk { top: false };

/// What stopped a [`Walk`].
#[derive(Debug)]
struct Found;

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("bytes, Args, or an error")
    }
}

impl std::error::Error for Found {}

impl ser::Error for Found {
    fn custom<M: fmt::Display>(_: M) -> Self {
        Found
    }
}

macro_rules! walk_leaves {
    ($($method:ident($($arg:ty),*);)*) => {$(
        fn $method(self, $(_: $arg),*) -> Result<(), Found> {
            Ok(())
        }
    )*};
}

impl Serializer for Walk {
    type Ok = ();
    type Error = Found;
    type SerializeSeq = Walk;
    type SerializeTuple = Walk;
    type SerializeTupleStruct = Walk;
    type SerializeTupleVariant = Walk;
    type SerializeMap = Walk;
    type SerializeStruct = Walk;
    type SerializeStructVariant = Walk;

    walk_leaves! {
        serialize_bool(bool);
        serialize_i8(i8);
        serialize_i16(i16);
        serialize_i32(i32);
        serialize_i64(i64);
        serialize_i128(i128);
        serialize_u8(u8);
        serialize_u16(u16);
        serialize_u32(u32);
        serialize_u64(u64);
        serialize_u128(u128);
        serialize_f32(f32);
        serialize_f64(f64);
        serialize_char(char);
        serialize_str(&str);
        serialize_none();
        serialize_unit();
        serialize_unit_struct(&'static str);
        serialize_unit_variant(&'static str, u32, &'static str);
    }

    fn serialize_bytes(self, _: &[u8]) -> Result<(), Found> {
        Err(Found)
    }

    /// Text made by `Display` (dates, say) is never bytes: not formatted.
    fn collect_str<T: fmt::Display + ?Sized>(self, _: &T) -> Result<(), Found> {
        Ok(())
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Found> {
        value.serialize(INSIDE)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<(), Found> {
        if self.top && name == ARGS {
            return Err(Found);
        }
        value.serialize(INSIDE)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        value: &T,
    ) -> Result<(), Found> {
        value.serialize(INSIDE)
    }

    fn serialize_seq(self, _: Option<usize>) -> Result<Walk, Found> {
        Ok(INSIDE)
    }

    fn serialize_tuple(self, _: usize) -> Result<Walk, Found> {
        Ok(INSIDE)
    }

    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Walk, Found> {
        Ok(INSIDE)
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Walk, Found> {
        Ok(INSIDE)
    }

    fn serialize_map(self, _: Option<usize>) -> Result<Walk, Found> {
        Ok(INSIDE)
    }

    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Walk, Found> {
        Ok(INSIDE)
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Walk, Found> {
        Ok(INSIDE)
    }
}

macro_rules! walk_compound {
    ($($trait:ident :: $method:ident),*) => {$(
        impl ser::$trait for Walk {
            type Ok = ();
            type Error = Found;

            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Found> {
                value.serialize(INSIDE)
            }

            fn end(self) -> Result<(), Found> {
                Ok(())
            }
        }
    )*};
}

walk_compound!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field
);

impl ser::SerializeMap for Walk {
    type Ok = ();
    type Error = Found;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Found> {
        key.serialize(INSIDE)
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Found> {
        value.serialize(INSIDE)
    }

    fn end(self) -> Result<(), Found> {
        Ok(())
    }
}

macro_rules! walk_fields {
    ($($trait:ident),*) => {$(
        impl ser::$trait for Walk {
            type Ok = ();
            type Error = Found;

            fn serialize_field<T: Serialize + ?Sized>(
                &mut self,
                _: &'static str,
                value: &T,
            ) -> Result<(), Found> {
                value.serialize(INSIDE)
            }

            fn end(self) -> Result<(), Found> {
                Ok(())
            }
        }
    )*};
}

walk_fields!(SerializeStruct, SerializeStructVariant);

/// Whether a JSON object is a placeholder, and which attachment it stands for.
fn placeholder(map: &serde_json::Map<String, Value>) -> Option<&Value> {
    if map.len() == 2 && map.get("_placeholder") == Some(&Value::Bool(true)) {
        map.get("num")
    } else {
        None
    }
}

/// A JSON value read with its placeholders resolved to their attachments: a placeholder
/// gives its bytes to whatever reads bytes (`bytes::Bytes`, `serde_bytes::ByteBuf`); anything
/// else, a placeholder included, reads as it would from the value (so a `serde_json::Value`
/// keeps the placeholder object).
#[derive(Clone, Copy)]
pub(crate) struct Resolved<'a> {
    pub(crate) value: &'a Value,
    pub(crate) binary: &'a [Bytes],
}

impl<'a> Resolved<'a> {
    fn attachment(&self) -> Option<Result<&'a Bytes, serde_json::Error>> {
        let Value::Object(map) = self.value else { return None };
        let num = placeholder(map)?;
        let found = num.as_u64().and_then(|n| self.binary.get(usize::try_from(n).ok()?));
        Some(found.ok_or_else(|| {
            de::Error::custom(format!(
                "no binary attachment {num} (the message has {})",
                self.binary.len()
            ))
        }))
    }
}

impl<'de> Deserializer<'de> for Resolved<'de> {
    type Error = serde_json::Error;

    fn deserialize_any<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.value {
            Value::Array(items) => {
                let mut seq = Seq { items: items.iter(), binary: self.binary };
                let value = visitor.visit_seq(&mut seq)?;
                match seq.items.len() {
                    0 => Ok(value),
                    _ => Err(de::Error::invalid_length(items.len(), &"fewer elements in array")),
                }
            }
            Value::Object(map) => {
                visitor.visit_map(Map { entries: map.iter(), value: None, binary: self.binary })
            }
            other => other.deserialize_any(visitor),
        }
    }

    fn deserialize_bytes<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.attachment() {
            Some(bytes) => visitor.visit_bytes(bytes?),
            None => self.deserialize_any(visitor),
        }
    }

    fn deserialize_byte_buf<V: de::Visitor<'de>>(
        self,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.deserialize_bytes(visitor)
    }

    fn deserialize_option<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.value {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: de::Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        visitor.visit_newtype_struct(self)
    }

    /// Enums read from the value itself: attachments inside an enum's variant are not
    /// resolved.
    fn deserialize_enum<V: de::Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.value.deserialize_enum(name, variants, visitor)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        unit unit_struct seq tuple tuple_struct map struct identifier ignored_any
    }
}

struct Seq<'a> {
    items: std::slice::Iter<'a, Value>,
    binary: &'a [Bytes],
}

impl<'de> SeqAccess<'de> for Seq<'de> {
    type Error = serde_json::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Self::Error> {
        match self.items.next() {
            Some(value) => seed.deserialize(Resolved { value, binary: self.binary }).map(Some),
            None => Ok(None),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

struct Map<'a> {
    entries: serde_json::map::Iter<'a>,
    value: Option<&'a Value>,
    binary: &'a [Bytes],
}

impl<'de> MapAccess<'de> for Map<'de> {
    type Error = serde_json::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        let Some((key, value)) = self.entries.next() else { return Ok(None) };
        self.value = Some(value);
        seed.deserialize(de::value::BorrowedStrDeserializer::<serde_json::Error>::new(key))
            .map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Self::Error> {
        let value = self.value.take().ok_or_else(|| de::Error::custom("value without a key"))?;
        seed.deserialize(Resolved { value, binary: self.binary })
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use serde_json::json;

    use super::*;

    #[test]
    fn plain_data_is_one_argument_without_attachments() {
        let (data, extras) = to_args(&json!({"a": [1, "x"]})).unwrap();
        assert_eq!(data.get(), r#"{"a":[1,"x"]}"#);
        assert!(extras.is_plain());
        assert_eq!(extras.binary.capacity(), 0, "nothing allocated");
        let (data, extras) = to_args(&Some(3)).unwrap();
        assert_eq!((data.get(), extras.arity), ("3", Arity::One));
    }

    #[test]
    fn raw_json_is_taken_as_it_is_and_nothing_else_is() {
        let raw = RawValue::from_string("[1, 2]".to_owned()).unwrap();
        assert_eq!(
            raw_payload(raw.clone()).ok().map(|r| r.get().to_owned()).as_deref(),
            Some("[1, 2]")
        );
        assert_eq!(raw_payload(String::from("x")).err().as_deref(), Some("x"));
        assert_eq!(raw_payload(json!([1])).err(), Some(json!([1])));
        assert_eq!(
            raw_as::<Payload>(|| raw.clone()).map(|r| r.get().to_owned()).as_deref(),
            Some("[1, 2]")
        );
        let made = std::cell::Cell::new(false);
        let other = raw_as::<String>(|| {
            made.set(true);
            raw.clone()
        });
        assert_eq!((other, made.get()), (None, false), "nothing made for another type");
    }

    #[test]
    fn args_spread_and_bytes_become_placeholders_in_order() {
        let (data, extras) =
            to_args(&Args((1, "2", Bytes::from_static(b"\x01\x02"), json!({"3": [true]}))))
                .unwrap();
        assert_eq!(data.get(), r#"[1,"2",{"_placeholder":true,"num":0},{"3":[true]}]"#);
        assert_eq!(extras.arity, Arity::Several);
        assert_eq!(extras.binary, vec![Bytes::from_static(b"\x01\x02")]);

        #[derive(serde::Serialize)]
        struct File {
            name: &'static str,
            parts: Vec<Bytes>,
        }
        let file = File { name: "f", parts: vec![Bytes::from_static(b"a"), Bytes::new()] };
        let (data, extras) = to_args(&file).unwrap();
        assert_eq!(
            data.get(),
            r#"{"name":"f","parts":[{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]}"#
        );
        assert_eq!((extras.arity, extras.binary.len()), (Arity::One, 2));
        // Nested, `Args` is its array.
        let (data, extras) = to_args(&vec![Args((1, 2))]).unwrap();
        assert_eq!((data.get(), extras.arity), ("[[1,2]]", Arity::One));
        // Elsewhere (a broker's JSON, say) it is its array too.
        assert_eq!(serde_json::to_string(&Args(("a", 1))).unwrap(), r#"["a",1]"#);
    }

    #[test]
    fn placeholders_resolve_to_their_attachments() {
        #[derive(Debug, Deserialize, PartialEq)]
        struct Upload {
            name: String,
            file: Bytes,
            thumb: Option<Bytes>,
        }
        let binary = [Bytes::from_static(b"one"), Bytes::from_static(b"two")];
        let value =
            json!(["x", {"name": "a", "file": {"_placeholder": true, "num": 1}, "thumb": null}]);
        let (name, upload) =
            <(String, Upload)>::deserialize(Resolved { value: &value, binary: &binary }).unwrap();
        assert_eq!(name, "x");
        assert_eq!(upload, Upload { name: "a".into(), file: binary[1].clone(), thumb: None });

        let value = json!({"_placeholder": true, "num": 2});
        let err = Bytes::deserialize(Resolved { value: &value, binary: &binary }).unwrap_err();
        assert_eq!(err.to_string(), "no binary attachment 2 (the message has 2)");
        // Read as anything but bytes, a placeholder is the object it is.
        let value = json!([{"_placeholder": true, "num": 0}, 5]);
        let (json, n) =
            <(Value, u8)>::deserialize(Resolved { value: &value, binary: &binary }).unwrap();
        assert_eq!((json, n), (json!({"_placeholder": true, "num": 0}), 5));
        let err = <(String, u8)>::deserialize(Resolved { value: &value, binary: &binary });
        assert!(err.unwrap_err().to_string().contains("invalid type: map"));
        let err = <(u8,)>::deserialize(Resolved { value: &json!([1, 2]), binary: &[] });
        assert!(err.is_err(), "an extra argument is refused as serde_json refuses it");
    }
}
