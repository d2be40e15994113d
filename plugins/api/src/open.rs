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
/// `required!("wire name")`.
macro_rules! open_deserialize {
    ($ty:ident { $($field:ident : $wire:literal => $absent:expr),* $(,)? }) => {
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
                                    $field = Some(map.next_value()?);
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

/// The "value when absent" of a required field: the derive's error.
macro_rules! required {
    ($wire:literal) => {
        return Err(<A::Error as ::serde::de::Error>::missing_field($wire))
    };
}
