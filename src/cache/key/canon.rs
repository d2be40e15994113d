//! Canonical JSON written straight from `Serialize`: object keys sorted (by their bytes; a key
//! written twice keeps its last value), no whitespace, a float with an integral value written as
//! an integer (`1.0` as `1`), a non-finite float as `null`. The bytes are those of
//! `serde_json::to_value` followed by a canonical walk of the value, without building the value:
//! the cache key encodes every request this way (the golden tests in `src/cache/tests.rs` pin
//! them).

use std::fmt::Display;
use std::io::Write as _;

use serde::Serialize;
use serde::ser::{self, Impossible};

/// Why a value has no canonical form (a map key that is not a string, number or bool).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Error(String);

impl ser::Error for Error {
    fn custom<T: Display>(msg: T) -> Self {
        Self(msg.to_string())
    }
}

/// Appends the canonical JSON of `v` to `out`.
pub fn write<T: Serialize + ?Sized>(v: &T, out: &mut Vec<u8>) -> Result<(), Error> {
    v.serialize(Canon { out, keep: None })
}

/// An object's members in canonical order, each value already canonical JSON, for a caller
/// that drops or replaces members before writing them with [`write_object`].
pub fn members<T: Serialize + ?Sized>(v: &T) -> Result<Members, Error> {
    let mut kept = None;
    let mut scratch = Vec::new();
    v.serialize(Canon {
        out: &mut scratch,
        keep: Some(&mut kept),
    })?;
    kept.ok_or_else(|| Error("not a JSON object".into()))
}

/// Members of an object: (key, canonical JSON of the value), sorted by key.
pub type Members = Vec<(String, Vec<u8>)>;

/// Writes members (sorted by key) as an object.
pub fn write_object(members: &[(String, Vec<u8>)], out: &mut Vec<u8>) {
    out.push(b'{');
    for (i, (k, v)) in members.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(k, out);
        out.push(b':');
        out.extend_from_slice(v);
    }
    out.push(b'}');
}

/// A JSON string, escaped as serde_json escapes it.
pub fn write_str(s: &str, out: &mut Vec<u8>) {
    // Writing JSON into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

struct Canon<'a> {
    out: &'a mut Vec<u8>,
    /// Set for the top-level value of [`members`]: an object hands its members here instead
    /// of writing them.
    keep: Option<&'a mut Option<Members>>,
}

fn write_display(out: &mut Vec<u8>, v: impl Display) {
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{v}");
}

fn write_f64(out: &mut Vec<u8>, f: f64) {
    if !f.is_finite() {
        out.extend_from_slice(b"null");
    } else if f.fract() == 0.0 && f.abs() < 1e15 {
        // Exact: an integral value below 1e15 fits an i64.
        #[allow(clippy::cast_possible_truncation)]
        write_display(out, f as i64);
    } else if let Some(n) = serde_json::Number::from_f64(f) {
        write_display(out, n);
    }
}

/// `serialize_<integer>`: its decimal digits, as serde_json writes a number.
macro_rules! integers_as_text {
    ($($method:ident: $t:ty),*) => {$(
        fn $method(self, v: $t) -> Result<(), Error> {
            write_display(self.out, v);
            Ok(())
        }
    )*};
}

impl<'a> ser::Serializer for Canon<'a> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Seq<'a>;
    type SerializeTuple = Seq<'a>;
    type SerializeTupleStruct = Seq<'a>;
    type SerializeTupleVariant = Seq<'a>;
    type SerializeMap = Obj<'a>;
    type SerializeStruct = Obj<'a>;
    type SerializeStructVariant = Obj<'a>;

    fn serialize_bool(self, v: bool) -> Result<(), Error> {
        self.out
            .extend_from_slice(if v { b"true" } else { b"false" });
        Ok(())
    }
    integers_as_text!(
        serialize_i8: i8,
        serialize_i16: i16,
        serialize_i32: i32,
        serialize_i64: i64,
        serialize_i128: i128,
        serialize_u8: u8,
        serialize_u16: u16,
        serialize_u32: u32,
        serialize_u64: u64,
        serialize_u128: u128
    );
    fn serialize_f32(self, v: f32) -> Result<(), Error> {
        write_f64(self.out, f64::from(v));
        Ok(())
    }
    fn serialize_f64(self, v: f64) -> Result<(), Error> {
        write_f64(self.out, v);
        Ok(())
    }
    fn serialize_char(self, v: char) -> Result<(), Error> {
        write_str(v.encode_utf8(&mut [0; 4]), self.out);
        Ok(())
    }
    fn serialize_str(self, v: &str) -> Result<(), Error> {
        write_str(v, self.out);
        Ok(())
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<(), Error> {
        use ser::SerializeSeq as _;
        let mut seq = self.serialize_seq(Some(v.len()))?;
        for b in v {
            seq.serialize_element(b)?;
        }
        seq.end()
    }
    fn serialize_none(self) -> Result<(), Error> {
        self.serialize_unit()
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Error> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), Error> {
        self.out.extend_from_slice(b"null");
        Ok(())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<(), Error> {
        self.serialize_unit()
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<(), Error> {
        self.serialize_str(variant)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        let mut inner = Vec::new();
        write(value, &mut inner)?;
        write_object(&[(variant.to_owned(), inner)], self.out);
        Ok(())
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Seq<'a>, Error> {
        self.out.push(b'[');
        Ok(Seq {
            out: self.out,
            first: true,
            in_variant: false,
        })
    }
    fn serialize_tuple(self, len: usize) -> Result<Seq<'a>, Error> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(self, _: &'static str, len: usize) -> Result<Seq<'a>, Error> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Seq<'a>, Error> {
        // `{"variant":[...]}`: the one-member object is opened here and closed by `end`.
        self.out.push(b'{');
        write_str(variant, self.out);
        self.out.extend_from_slice(b":[");
        Ok(Seq {
            out: self.out,
            first: true,
            in_variant: true,
        })
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Obj<'a>, Error> {
        Ok(Obj {
            out: self.out,
            keep: self.keep,
            members: Vec::new(),
            key: None,
            variant: None,
            raw: false,
        })
    }
    fn serialize_struct(self, name: &'static str, len: usize) -> Result<Obj<'a>, Error> {
        let mut obj = self.serialize_map(Some(len))?;
        obj.raw = name == RAW_VALUE;
        Ok(obj)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Obj<'a>, Error> {
        Ok(Obj {
            out: self.out,
            keep: None,
            members: Vec::new(),
            key: None,
            variant: Some(variant),
            raw: false,
        })
    }
}

/// An array being written (or, for a tuple variant, the array inside `{"variant":...}`).
pub struct Seq<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
    /// Inside `{"variant":[...]}`: the object closes with the array.
    in_variant: bool,
}

impl Seq<'_> {
    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        write(value, self.out)
    }
    fn close(self) {
        self.out.push(b']');
        if self.in_variant {
            self.out.push(b'}');
        }
    }
}

/// The four array-like serde traits, all writing elements the same way.
macro_rules! seq_traits {
    ($($name:ident :: $method:ident),*) => {$(
        impl ser::$name for Seq<'_> {
            type Ok = ();
            type Error = Error;
            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
                self.element(value)
            }
            fn end(self) -> Result<(), Error> {
                self.close();
                Ok(())
            }
        }
    )*};
}

seq_traits!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field
);

/// An object being collected: members are sorted when it ends.
pub struct Obj<'a> {
    out: &'a mut Vec<u8>,
    keep: Option<&'a mut Option<Members>>,
    members: Members,
    key: Option<String>,
    /// For a struct variant, `{"variant":{...}}`.
    variant: Option<&'static str>,
    /// serde_json's `RawValue` (JSON text kept as it is, as a shared tool schema is): its one
    /// field is the text, written in canonical form as the value it holds.
    raw: bool,
}

/// The struct name serde_json gives a `RawValue` when it serialises one (its own serializers
/// recognise it the same way). Should it change, the golden hashes in `cache::tests`, whose
/// requests carry tool schemas, fail.
const RAW_VALUE: &str = "$serde_json::private::RawValue";

impl Obj<'_> {
    fn member<T: Serialize + ?Sized>(&mut self, key: String, value: &T) -> Result<(), Error> {
        let mut v = Vec::new();
        write(value, &mut v)?;
        self.members.push((key, v));
        Ok(())
    }

    fn close(mut self) {
        // Stable: among members with the same key the last one written stays last, and is
        // the one kept (as a map keeps the last value inserted under a key).
        self.members.sort_by(|a, b| a.0.cmp(&b.0));
        let mut members: Members = Vec::with_capacity(self.members.len());
        for m in self.members {
            match members.last_mut() {
                Some(last) if last.0 == m.0 => *last = m,
                _ => members.push(m),
            }
        }
        if let Some(keep) = self.keep {
            *keep = Some(members);
            return;
        }
        match self.variant {
            Some(variant) => {
                let mut inner = Vec::new();
                write_object(&members, &mut inner);
                write_object(&[(variant.to_owned(), inner)], self.out);
            }
            None => write_object(&members, self.out),
        }
    }
}

impl ser::SerializeMap for Obj<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Error> {
        self.key = Some(key.serialize(KeyName)?);
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        let key = self
            .key
            .take()
            .ok_or_else(|| Error("a map value without its key".into()))?;
        self.member(key, value)
    }
    fn end(self) -> Result<(), Error> {
        self.close();
        Ok(())
    }
}

/// Structs and struct variants: their fields are members.
macro_rules! struct_traits {
    ($($name:ident),*) => {$(
        impl ser::$name for Obj<'_> {
            type Ok = ();
            type Error = Error;
            fn serialize_field<T: Serialize + ?Sized>(
                &mut self,
                key: &'static str,
                value: &T,
            ) -> Result<(), Error> {
                if self.raw {
                    let text = value.serialize(KeyName)?;
                    let held: serde_json::Value = serde_json::from_str(&text)
                        .map_err(|e| Error(format!("raw JSON that does not parse: {e}")))?;
                    return held.serialize(Canon {
                        out: &mut *self.out,
                        keep: self.keep.take(),
                    });
                }
                self.member(key.to_owned(), value)
            }
            fn end(self) -> Result<(), Error> {
                if !self.raw {
                    self.close();
                }
                Ok(())
            }
        }
    )*};
}

struct_traits!(SerializeStruct, SerializeStructVariant);

/// A map key as the string serde_json makes of it (strings, chars, bools and integers).
struct KeyName;

/// `serialize_<type>` for key types written as their text.
macro_rules! key_as_text {
    ($($method:ident: $t:ty),*) => {$(
        fn $method(self, v: $t) -> Result<String, Error> {
            Ok(v.to_string())
        }
    )*};
}

fn not_a_key() -> Error {
    Error("a map key must be a string, a number or a bool".into())
}

impl ser::Serializer for KeyName {
    type Ok = String;
    type Error = Error;
    type SerializeSeq = Impossible<String, Error>;
    type SerializeTuple = Impossible<String, Error>;
    type SerializeTupleStruct = Impossible<String, Error>;
    type SerializeTupleVariant = Impossible<String, Error>;
    type SerializeMap = Impossible<String, Error>;
    type SerializeStruct = Impossible<String, Error>;
    type SerializeStructVariant = Impossible<String, Error>;

    key_as_text!(
        serialize_bool: bool,
        serialize_i8: i8,
        serialize_i16: i16,
        serialize_i32: i32,
        serialize_i64: i64,
        serialize_u8: u8,
        serialize_u16: u16,
        serialize_u32: u32,
        serialize_u64: u64,
        serialize_char: char
    );
    fn serialize_f32(self, _: f32) -> Result<String, Error> {
        Err(not_a_key())
    }
    fn serialize_f64(self, _: f64) -> Result<String, Error> {
        Err(not_a_key())
    }
    fn serialize_str(self, v: &str) -> Result<String, Error> {
        Ok(v.to_owned())
    }
    fn serialize_bytes(self, _: &[u8]) -> Result<String, Error> {
        Err(not_a_key())
    }
    fn serialize_none(self) -> Result<String, Error> {
        Err(not_a_key())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<String, Error> {
        Err(not_a_key())
    }
    fn serialize_unit(self) -> Result<String, Error> {
        Err(not_a_key())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<String, Error> {
        Err(not_a_key())
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<String, Error> {
        Ok(variant.to_owned())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<String, Error> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<String, Error> {
        Err(not_a_key())
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, Error> {
        Err(not_a_key())
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, Error> {
        Err(not_a_key())
    }
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, Error> {
        Err(not_a_key())
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, Error> {
        Err(not_a_key())
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Error> {
        Err(not_a_key())
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeStruct, Error> {
        Err(not_a_key())
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, Error> {
        Err(not_a_key())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    /// The reference: serde_json's value, then a canonical walk of it.
    fn by_value(v: &Value, out: &mut Vec<u8>) {
        match v {
            Value::Object(map) => {
                let mut members: Vec<_> = map.iter().collect();
                members.sort_by(|a, b| a.0.cmp(b.0));
                out.push(b'{');
                for (i, (k, item)) in members.into_iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write_str(k, out);
                    out.push(b':');
                    by_value(item, out);
                }
                out.push(b'}');
            }
            Value::Array(items) => {
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    by_value(item, out);
                }
                out.push(b']');
            }
            Value::Number(n) => match n.as_f64() {
                Some(f) if n.is_f64() => write_f64(out, f),
                _ => write_display(out, n),
            },
            other => out.extend_from_slice(other.to_string().as_bytes()),
        }
    }

    #[derive(Serialize)]
    enum E {
        Unit,
        New(u8),
        Tuple(u8, &'static str),
        Struct { b: f32, a: Option<i8> },
    }

    #[derive(Serialize)]
    struct S {
        z: Vec<E>,
        y: std::collections::BTreeMap<u16, bool>,
        x: (f64, f64, f64, f64),
        w: Option<String>,
        v: char,
        #[serde(flatten)]
        rest: serde_json::Map<String, Value>,
    }

    #[test]
    fn the_same_bytes_as_the_value_walked_canonically() {
        let s = S {
            z: vec![
                E::Unit,
                E::New(3),
                E::Tuple(1, "t"),
                E::Struct { b: 0.1, a: None },
            ],
            y: [(10, true), (2, false)].into_iter().collect(),
            x: (1.0, -2.5, 1e20, f64::NAN),
            w: None,
            v: '\u{7}',
            rest: json!({"q": "é\"\n", "a": [1.0, {"d": null, "c": 1e-7}]})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        };
        let mut direct = Vec::new();
        write(&s, &mut direct).expect("canonical");
        let mut reference = Vec::new();
        by_value(&serde_json::to_value(&s).expect("value"), &mut reference);
        assert_eq!(
            String::from_utf8_lossy(&direct),
            String::from_utf8_lossy(&reference)
        );
        let listed = members(&s).expect("members");
        let keys: Vec<&str> = listed.iter().map(|m| m.0.as_str()).collect();
        assert_eq!(keys, ["a", "q", "v", "w", "x", "y", "z"]);
        let mut rebuilt = Vec::new();
        write_object(&listed, &mut rebuilt);
        assert_eq!(rebuilt, direct);
        assert!(members(&3).is_err(), "a number has no members");
    }

    #[test]
    fn raw_json_is_written_as_the_value_it_holds() {
        let value = json!({"z": [1.0, {"b": "x", "a": null}], "a": "\u{e9} \"q\""});
        let text = r#"{ "z": [1.0, {"b": "x", "a": null}], "a": "\u00e9 \"q\"" }"#;
        let raw = serde_json::value::RawValue::from_string(text.into()).expect("raw");
        let mut expected = Vec::new();
        by_value(&value, &mut expected);
        let mut got = Vec::new();
        write(&raw, &mut got).expect("write");
        assert_eq!(got, expected);
        // Inside a struct (a tool schema in a request), and as a top-level object's members.
        #[derive(Serialize)]
        struct Tool<'a> {
            tool: &'a serde_json::value::RawValue,
        }
        let mut nested = Vec::new();
        by_value(&json!({"tool": value}), &mut nested);
        let mut got = Vec::new();
        write(&Tool { tool: &raw }, &mut got).expect("write");
        assert_eq!(got, nested);
        let members = members(&*raw).expect("members");
        assert_eq!(
            members.iter().map(|m| m.0.as_str()).collect::<Vec<_>>(),
            ["a", "z"]
        );
    }
}
