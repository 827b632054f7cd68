//! Request bodies read as their documents say, stricter than serde's
//! defaults in two ways:
//!
//! - a struct comes only from a JSON object: serde's derive also takes an
//!   array of the fields in order (`["python", null, [...]]`), which no
//!   client means and no document allows;
//! - an integer is JSON Schema's: any number without a fraction, `7966.0`
//!   as well as `7966`.
//!
//! Everything else (unknown fields, missing fields, wrong types) is what the
//! types' derives say.

use serde::de::{DeserializeOwned, DeserializeSeed, Error as _, MapAccess, SeqAccess, Unexpected, Visitor};
use serde::{forward_to_deserialize_any, Deserializer};
use serde_json::{Map, Number, Value};

/// Parses `bytes` as a `T`, strictly (see the module docs).
pub fn from_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, serde_json::Error> {
    from_value(serde_json::from_slice(bytes)?)
}

/// Reads a parsed value as a `T`, strictly (see the module docs).
pub fn from_value<T: DeserializeOwned>(value: Value) -> Result<T, serde_json::Error> {
    T::deserialize(Strict(value))
}

/// A value that deserializes structs from objects only and integers from
/// whole numbers; its arrays' items and objects' values are strict too.
struct Strict(Value);

fn unexpected(v: &Value) -> Unexpected<'_> {
    match v {
        Value::Null => Unexpected::Unit,
        Value::Bool(b) => Unexpected::Bool(*b),
        Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => Unexpected::Unsigned(u),
            (_, Some(i), _) => Unexpected::Signed(i),
            (_, _, f) => Unexpected::Float(f.unwrap_or(f64::NAN)),
        },
        Value::String(s) => Unexpected::Str(s),
        Value::Array(_) => Unexpected::Seq,
        Value::Object(_) => Unexpected::Map,
    }
}

/// A number without a fraction given as a float becomes an integer.
fn whole(value: Value) -> Value {
    match &value {
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            if f.fract() != 0.0 {
                value
            } else if (0.0..=u64::MAX as f64).contains(&f) {
                Value::Number(Number::from(f as u64))
            } else if (i64::MIN as f64..0.0).contains(&f) {
                Value::Number(Number::from(f as i64))
            } else {
                value
            }
        }
        _ => value,
    }
}

macro_rules! integer {
    ($($method:ident)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
            whole(self.0).$method(visitor)
        }
    )*};
}

impl<'de> Deserializer<'de> for Strict {
    type Error = serde_json::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Array(items) => visitor.visit_seq(Items(items.into_iter())),
            Value::Object(map) => visitor.visit_map(Fields { iter: map.into_iter(), value: None }),
            other => other.deserialize_any(visitor),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Object(_) => self.deserialize_any(visitor),
            other => Err(Self::Error::invalid_type(unexpected(&other), &"an object")),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.deserialize_enum(name, variants, visitor)
    }

    integer! {
        deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64
        deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64
    }

    forward_to_deserialize_any! {
        bool i128 u128 f32 f64 char str string bytes byte_buf unit unit_struct seq tuple tuple_struct map
        identifier ignored_any
    }
}

/// The items of an array, each strict.
struct Items(std::vec::IntoIter<Value>);

impl<'de> SeqAccess<'de> for Items {
    type Error = serde_json::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, Self::Error> {
        self.0.next().map(|v| seed.deserialize(Strict(v))).transpose()
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

/// The fields of an object, each value strict.
struct Fields {
    iter: <Map<String, Value> as IntoIterator>::IntoIter,
    value: Option<Value>,
}

impl<'de> MapAccess<'de> for Fields {
    type Error = serde_json::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, Self::Error> {
        let Some((key, value)) = self.iter.next() else { return Ok(None) };
        self.value = Some(value);
        seed.deserialize(Value::String(key)).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Self::Error> {
        let value = self.value.take().ok_or_else(|| Self::Error::custom("a value without its key"))?;
        seed.deserialize(Strict(value))
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        n: Option<u32>,
        #[serde(default)]
        tags: Vec<String>,
    }

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        name: String,
        items: Vec<Inner>,
        #[serde(default)]
        limit: Option<u64>,
    }

    #[test]
    fn objects_parse_as_serde_would() {
        let v: Outer =
            from_slice(br#"{"name":"a","items":[{"n":3},{"n":null,"tags":["x"]}],"limit":null}"#).expect("parses");
        assert_eq!(
            v,
            Outer {
                name: "a".into(),
                items: vec![Inner { n: Some(3), tags: vec![] }, Inner { n: None, tags: vec!["x".into()] }],
                limit: None
            }
        );
    }

    #[test]
    fn structs_come_from_objects_only() {
        for text in [
            r#"["a", [], null]"#,
            r#"{"name":"a","items":[[3, []]]}"#,
            r#"{"name":"a","items":[{"n":1}], "extra": 1}"#,
            r#"{"name":"a","items":{"n":1}}"#,
        ] {
            assert!(from_slice::<Outer>(text.as_bytes()).is_err(), "accepted {text}");
        }
        let e = from_slice::<Outer>(br#"["a", [], null]"#).expect_err("refused");
        assert_eq!(e.to_string(), "invalid type: sequence, expected an object");
    }

    #[test]
    fn integers_are_whole_numbers_however_written() {
        let v: Outer = from_slice(br#"{"name":"a","items":[{"n":7966.0}],"limit":1e3}"#).expect("parses");
        assert_eq!((v.items[0].n, v.limit), (Some(7966), Some(1000)));
        assert!(from_slice::<Outer>(br#"{"name":"a","items":[{"n":7966.5}]}"#).is_err());
        assert!(from_slice::<Outer>(br#"{"name":"a","items":[{"n":-1}]}"#).is_err());
        assert!(from_slice::<Outer>(br#"{"name":"a","items":[{"n":5000000000.0}]}"#).is_err(), "over u32");
    }
}
