//! `Deserialize` for the canonical types that keep their unmodelled fields in `extra`.
//!
//! serde's derive reads a struct with a `#[serde(flatten)]` map by first buffering the whole
//! object in its own value tree and then reading the fields out of it: every request, answer and
//! streamed chunk paid for its JSON twice (about a third of decoding a streamed event). The
//! visitor this macro writes reads each key once: a modelled field straight into its type,
//! anything else into `extra` as a JSON value, in the order it came. It accepts and rejects what
//! the derive did (a modelled field twice is an error; an unknown key twice keeps the last), and
//! the derive's `Serialize` is unchanged, so what goes on the wire is the same.

/// `open_deserialize!(Type { field: "wire name" => value when absent, ... })`; the struct's
/// other field is `extra: Extra`. A required field's "value when absent" is
/// `required!("wire name")`. A field of type `Option<T>` marked `; objects` is read as `T` when
/// its value is an object; any other value (null included) is kept in `extra` as it came.
macro_rules! open_deserialize {
    ($ty:ident { $($field:ident : $wire:literal => $absent:expr $(; $objects:ident)?),* $(,)? }) => {
        impl<'de> ::serde::Deserialize<'de> for $ty {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                #[allow(non_camel_case_types)]
                enum Key {
                    $($field,)*
                    Other(String),
                }
                struct KeyVisitor;
                impl<'de> ::serde::de::Visitor<'de> for KeyVisitor {
                    type Value = Key;
                    fn expecting(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                        f.write_str("field identifier")
                    }
                    fn visit_str<E: ::serde::de::Error>(self, v: &str) -> Result<Key, E> {
                        Ok(match v {
                            $($wire => Key::$field,)*
                            _ => Key::Other(v.to_owned()),
                        })
                    }
                    fn visit_string<E: ::serde::de::Error>(self, v: String) -> Result<Key, E> {
                        Ok(match v.as_str() {
                            $($wire => Key::$field,)*
                            _ => Key::Other(v),
                        })
                    }
                }
                impl<'de> ::serde::Deserialize<'de> for Key {
                    fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                        d.deserialize_identifier(KeyVisitor)
                    }
                }
                struct V;
                impl<'de> ::serde::de::Visitor<'de> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                        f.write_str(concat!("struct ", stringify!($ty)))
                    }
                    fn visit_map<A: ::serde::de::MapAccess<'de>>(
                        self,
                        mut map: A,
                    ) -> Result<$ty, A::Error> {
                        $(let mut $field = None;)*
                        let mut extra = $crate::chat::Extra::new();
                        while let Some(key) = map.next_key::<Key>()? {
                            match key {
                                $(Key::$field => {
                                    if $field.is_some() {
                                        return Err(<A::Error as ::serde::de::Error>::duplicate_field($wire));
                                    }
                                    open_value!(map, extra, $field, $wire $(, $objects)?);
                                })*
                                Key::Other(name) => {
                                    let value: ::serde_json::Value = map.next_value()?;
                                    extra.insert(name, value);
                                }
                            }
                        }
                        Ok($ty {
                            $($field: match $field {
                                Some(v) => v,
                                None => $absent,
                            },)*
                            extra,
                        })
                    }
                }
                d.deserialize_map(V)
            }
        }
    };
}

/// Reads one modelled field's value (see `open_deserialize!`).
macro_rules! open_value {
    ($map:ident, $extra:ident, $field:ident, $wire:literal) => {
        $field = Some($map.next_value()?)
    };
    ($map:ident, $extra:ident, $field:ident, $wire:literal, objects) => {
        match $map.next_value()? {
            $crate::open::ObjectOr::Object(v) => {
                if !$extra.is_empty() {
                    $extra.remove($wire);
                }
                $field = Some(Some(v))
            }
            $crate::open::ObjectOr::Other(v) => {
                $extra.insert($wire.to_owned(), v);
            }
        }
    };
}

/// The "value when absent" of a required field: the derive's error.
macro_rules! required {
    ($wire:literal) => {
        return Err(<A::Error as ::serde::de::Error>::missing_field($wire))
    };
}

/// A member read as `T` when it is an object and kept as its JSON value otherwise.
pub(crate) enum ObjectOr<T> {
    Object(T),
    Other(serde_json::Value),
}

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for ObjectOr<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ObjectOrVisitor(std::marker::PhantomData))
    }
}

struct ObjectOrVisitor<T>(std::marker::PhantomData<T>);

impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for ObjectOrVisitor<T> {
    type Value = ObjectOr<T>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        T::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(ObjectOr::Object)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        serde::Deserialize::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))
            .map(ObjectOr::Other)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(ObjectOr::Other(v.into()))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(ObjectOr::Other(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(ObjectOr::Other(v.into()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(ObjectOr::Other(v.into()))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(ObjectOr::Other(v.into()))
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(ObjectOr::Other(v.into()))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(ObjectOr::Other(serde_json::Value::Null))
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(ObjectOr::Other(serde_json::Value::Null))
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

/// A map key, borrowed from the input when the deserializer can lend it.
pub(crate) enum Key<'de> {
    Borrowed(&'de str),
    Owned(String),
}

impl Key<'_> {
    pub(crate) fn as_str(&self) -> &str {
        match self {
            Key::Borrowed(s) => s,
            Key::Owned(s) => s,
        }
    }
}

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key::Borrowed(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key::Owned(v.to_owned()))
            }
            fn visit_string<E>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key::Owned(v))
            }
        }
        d.deserialize_str(V)
    }
}
