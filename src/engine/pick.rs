//! One fact out of a serialisable value, without making the whole value JSON: a serializer that
//! follows a fact path through the members as they are serialized, skips every other member
//! unread, and makes only the value at the end of the path JSON.
//!
//! The answer is the one [`conditions::lookup`](super::conditions::lookup) gives over
//! `without_nulls(serde_json::to_value(value))`: a path through a missing member, a scalar or a
//! null is absent, a null at its end is absent, and the value found has its nulls removed.

use serde::ser::{self, Impossible, Serialize, Serializer};
use serde_json::Value;

type Error = serde_json::Error;

/// The value at `path` inside `value` (as serialized to JSON, nulls removed), or `None` when it
/// is absent.
pub fn pick<T: Serialize + ?Sized>(value: &T, path: &[String]) -> Option<Value> {
    if path.is_empty() {
        let whole = super::render::without_nulls(serde_json::to_value(value).ok()?);
        return (!whole.is_null()).then_some(whole);
    }
    value.serialize(Pick { path }).ok().flatten()
}

/// Follows a non-empty `path` down the value being serialized.
struct Pick<'p> {
    path: &'p [String],
}

impl<'p> Pick<'p> {
    fn head(&self) -> &'p str {
        self.path.first().map_or("", String::as_str)
    }

    fn rest(&self) -> &'p [String] {
        self.path.get(1..).unwrap_or_default()
    }

    /// A variant serde_json writes as `{variant: ...}`: whole, then looked up.
    fn whole(&self) -> Whole<'p> {
        Whole { path: self.path }
    }
}

/// A value serde_json writes as `{variant: ...}`: made JSON, then the path looked up in it (no
/// context section has such a value; this keeps the answer right if one ever does).
struct Whole<'p> {
    path: &'p [String],
}

impl Whole<'_> {
    fn lookup(&self, value: Value) -> Option<Value> {
        let value = super::render::without_nulls(value);
        super::conditions::lookup_in(self.path, &value).cloned()
    }
}

macro_rules! absent {
    ($($name:ident($ty:ty)),* $(,)?) => {
        $(fn $name(self, _: $ty) -> Result<Self::Ok, Error> { Ok(None) })*
    };
}

impl<'p> Serializer for Pick<'p> {
    type Ok = Option<Value>;
    type Error = Error;
    type SerializeSeq = Seq<'p>;
    type SerializeTuple = Seq<'p>;
    type SerializeTupleStruct = Seq<'p>;
    type SerializeTupleVariant =
        WholeOf<'p, <serde_json::value::Serializer as Serializer>::SerializeTupleVariant>;
    type SerializeMap = Map<'p>;
    type SerializeStruct = Struct<'p>;
    type SerializeStructVariant =
        WholeOf<'p, <serde_json::value::Serializer as Serializer>::SerializeStructVariant>;

    absent!(
        serialize_bool(bool),
        serialize_i8(i8),
        serialize_i16(i16),
        serialize_i32(i32),
        serialize_i64(i64),
        serialize_i128(i128),
        serialize_u8(u8),
        serialize_u16(u16),
        serialize_u32(u32),
        serialize_u64(u64),
        serialize_u128(u128),
        serialize_f32(f32),
        serialize_f64(f64),
        serialize_char(char),
        serialize_str(&str),
        serialize_bytes(&[u8]),
        serialize_unit_struct(&'static str),
    );

    fn serialize_none(self) -> Result<Self::Ok, Error> {
        Ok(None)
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<Self::Ok, Error> {
        value.serialize(self)
    }

    fn serialize_unit(self) -> Result<Self::Ok, Error> {
        Ok(None)
    }

    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
    ) -> Result<Self::Ok, Error> {
        Ok(None)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<Self::Ok, Error> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<Self::Ok, Error> {
        Ok(if self.head() == variant {
            pick(value, self.rest())
        } else {
            None
        })
    }

    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, Error> {
        Ok(Seq {
            wanted: self.head().parse::<usize>().ok(),
            rest: self.rest(),
            index: 0,
            found: None,
        })
    }

    fn serialize_tuple(self, len: usize) -> Result<Self::SerializeTuple, Error> {
        self.serialize_seq(Some(len))
    }

    fn serialize_tuple_struct(
        self,
        _: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleStruct, Error> {
        self.serialize_seq(Some(len))
    }

    fn serialize_tuple_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleVariant, Error> {
        Ok(WholeOf {
            whole: self.whole(),
            inner: serde_json::value::Serializer
                .serialize_tuple_variant(name, index, variant, len)?,
        })
    }

    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Error> {
        Ok(Map {
            head: self.head(),
            rest: self.rest(),
            matched: false,
            found: None,
        })
    }

    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeStruct, Error> {
        Ok(Struct {
            head: self.head(),
            rest: self.rest(),
            found: None,
        })
    }

    fn serialize_struct_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStructVariant, Error> {
        Ok(WholeOf {
            whole: self.whole(),
            inner: serde_json::value::Serializer
                .serialize_struct_variant(name, index, variant, len)?,
        })
    }
}

/// A list: only the item the path's index names is followed.
struct Seq<'p> {
    wanted: Option<usize>,
    rest: &'p [String],
    index: usize,
    found: Option<Value>,
}

impl Seq<'_> {
    fn item<T: Serialize + ?Sized>(&mut self, value: &T) {
        if self.wanted == Some(self.index) {
            self.found = pick(value, self.rest);
        }
        self.index += 1;
    }
}

impl ser::SerializeSeq for Seq<'_> {
    type Ok = Option<Value>;
    type Error = Error;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.item(value);
        Ok(())
    }

    fn end(self) -> Result<Self::Ok, Error> {
        Ok(self.found)
    }
}

impl ser::SerializeTuple for Seq<'_> {
    type Ok = Option<Value>;
    type Error = Error;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.item(value);
        Ok(())
    }

    fn end(self) -> Result<Self::Ok, Error> {
        Ok(self.found)
    }
}

impl ser::SerializeTupleStruct for Seq<'_> {
    type Ok = Option<Value>;
    type Error = Error;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.item(value);
        Ok(())
    }

    fn end(self) -> Result<Self::Ok, Error> {
        Ok(self.found)
    }
}

/// A map: each key made text as serde_json makes it; the value of the last key equal to the
/// path's member is followed (serde_json keeps the last of a repeated key).
struct Map<'p> {
    head: &'p str,
    rest: &'p [String],
    matched: bool,
    found: Option<Value>,
}

impl ser::SerializeMap for Map<'_> {
    type Ok = Option<Value>;
    type Error = Error;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Error> {
        self.matched = key.serialize(KeyIs(self.head))?;
        Ok(())
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        if std::mem::take(&mut self.matched) {
            self.found = pick(value, self.rest);
        }
        Ok(())
    }

    fn end(self) -> Result<Self::Ok, Error> {
        Ok(self.found)
    }
}

/// A struct: only the field the path names is followed.
struct Struct<'p> {
    head: &'p str,
    rest: &'p [String],
    found: Option<Value>,
}

impl ser::SerializeStruct for Struct<'_> {
    type Ok = Option<Value>;
    type Error = Error;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        if key == self.head {
            self.found = pick(value, self.rest);
        }
        Ok(())
    }

    fn end(self) -> Result<Self::Ok, Error> {
        Ok(self.found)
    }
}

/// A value serde_json writes as `{variant: ...}`, built whole by serde_json's own serializer.
struct WholeOf<'p, S> {
    whole: Whole<'p>,
    inner: S,
}

impl<S: ser::SerializeTupleVariant<Ok = Value, Error = Error>> ser::SerializeTupleVariant
    for WholeOf<'_, S>
{
    type Ok = Option<Value>;
    type Error = Error;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.inner.serialize_field(value)
    }

    fn end(self) -> Result<Self::Ok, Error> {
        Ok(self.whole.lookup(self.inner.end()?))
    }
}

impl<S: ser::SerializeStructVariant<Ok = Value, Error = Error>> ser::SerializeStructVariant
    for WholeOf<'_, S>
{
    type Ok = Option<Value>;
    type Error = Error;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.inner.serialize_field(key, value)
    }

    fn end(self) -> Result<Self::Ok, Error> {
        Ok(self.whole.lookup(self.inner.end()?))
    }
}

/// Whether a map key, made text as serde_json makes it, is the given member name. A key
/// serde_json would refuse matches nothing.
struct KeyIs<'a>(&'a str);

macro_rules! key_as_text {
    ($($name:ident($ty:ty)),* $(,)?) => {
        $(fn $name(self, v: $ty) -> Result<bool, Error> { Ok(v.to_string() == self.0) })*
    };
}

macro_rules! key_refused {
    ($($name:ident($ty:ty)),* $(,)?) => {
        $(fn $name(self, _: $ty) -> Result<bool, Error> { Ok(false) })*
    };
}

impl Serializer for KeyIs<'_> {
    type Ok = bool;
    type Error = Error;
    type SerializeSeq = Impossible<bool, Error>;
    type SerializeTuple = Impossible<bool, Error>;
    type SerializeTupleStruct = Impossible<bool, Error>;
    type SerializeTupleVariant = Impossible<bool, Error>;
    type SerializeMap = Impossible<bool, Error>;
    type SerializeStruct = Impossible<bool, Error>;
    type SerializeStructVariant = Impossible<bool, Error>;

    key_as_text!(
        serialize_bool(bool),
        serialize_i8(i8),
        serialize_i16(i16),
        serialize_i32(i32),
        serialize_i64(i64),
        serialize_i128(i128),
        serialize_u8(u8),
        serialize_u16(u16),
        serialize_u32(u32),
        serialize_u64(u64),
        serialize_u128(u128),
        serialize_char(char),
    );

    key_refused!(
        serialize_f32(f32),
        serialize_f64(f64),
        serialize_bytes(&[u8]),
        serialize_unit_struct(&'static str),
    );

    fn serialize_str(self, v: &str) -> Result<bool, Error> {
        Ok(v == self.0)
    }

    fn serialize_none(self) -> Result<bool, Error> {
        Ok(false)
    }

    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<bool, Error> {
        Ok(false)
    }

    fn serialize_unit(self) -> Result<bool, Error> {
        Ok(false)
    }

    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<bool, Error> {
        Ok(variant == self.0)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<bool, Error> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<bool, Error> {
        Ok(false)
    }

    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, Error> {
        Err(ser::Error::custom("a list is no map key"))
    }

    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, Error> {
        Err(ser::Error::custom("a tuple is no map key"))
    }

    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, Error> {
        Err(ser::Error::custom("a tuple is no map key"))
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, Error> {
        Err(ser::Error::custom("a variant is no map key"))
    }

    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Error> {
        Err(ser::Error::custom("a map is no map key"))
    }

    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeStruct, Error> {
        Err(ser::Error::custom("a struct is no map key"))
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, Error> {
        Err(ser::Error::custom("a variant is no map key"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::conditions::lookup_in;
    use crate::engine::render::without_nulls;
    use crate::playbook::context::TargetContext;

    /// Every path through `value` (and one step past each leaf, and a member that is none).
    fn paths(value: &Value, at: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        out.push(at.clone());
        let mut below = |key: String, v: &Value, out: &mut Vec<Vec<String>>| {
            at.push(key);
            paths(v, at, out);
            at.pop();
        };
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    below(k.clone(), v, out);
                }
                below("no_such_member".into(), &Value::Null, out);
            }
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    below(i.to_string(), v, out);
                }
                below(items.len().to_string(), &Value::Null, out);
            }
            _ => {
                at.push("past_a_leaf".into());
                out.push(at.clone());
                at.pop();
            }
        }
    }

    fn assert_picks_as_lookup(context: &TargetContext) {
        let raw = serde_json::to_value(context).unwrap();
        let whole = without_nulls(raw.clone());
        let mut all = Vec::new();
        // the raw value's paths, so the nulls and the members they hide are asked too
        paths(&raw, &mut Vec::new(), &mut all);
        assert!(all.len() > 100, "the sample reaches most paths");
        for path in all {
            assert_eq!(
                pick(context, &path),
                lookup_in(&path, &whole).cloned(),
                "{}",
                path.join(".")
            );
        }
    }

    #[test]
    fn picks_every_path_as_the_whole_json_looks_it_up() {
        let full = TargetContext::sample();
        assert_picks_as_lookup(&full);
        let mut c = full.clone();
        c.unit = None;
        c.location = None;
        assert_picks_as_lookup(&c);
    }

    #[test]
    fn follows_maps_lists_and_variants_as_serde_json_writes_them() {
        #[derive(serde::Serialize)]
        enum E {
            New(u8),
            Tuple(u8, u8),
            Struct { a: Option<u8>, b: u8 },
            Unit,
        }
        #[derive(serde::Serialize)]
        struct S {
            map: std::collections::BTreeMap<u16, Vec<Option<u8>>>,
            list: Vec<E>,
            #[serde(flatten)]
            flat: Option<std::collections::BTreeMap<String, u8>>,
        }
        let s = S {
            map: [(7, vec![Some(1), None])].into(),
            list: vec![
                E::New(1),
                E::Tuple(2, 3),
                E::Struct { a: None, b: 4 },
                E::Unit,
            ],
            flat: Some([("x".to_string(), 5)].into()),
        };
        let whole = without_nulls(serde_json::to_value(&s).unwrap());
        let mut all = Vec::new();
        paths(
            &serde_json::to_value(&s).unwrap(),
            &mut Vec::new(),
            &mut all,
        );
        for path in all {
            assert_eq!(
                pick(&s, &path),
                lookup_in(&path, &whole).cloned(),
                "{}",
                path.join(".")
            );
        }
        let p = |p: &str| p.split('.').map(String::from).collect::<Vec<_>>();
        assert_eq!(pick(&s, &p("map.7.0")), Some(Value::from(1)));
        assert_eq!(pick(&s, &p("list.1.Tuple.1")), Some(Value::from(3)));
        assert_eq!(pick(&s, &p("x")), Some(Value::from(5)));
        assert_eq!(pick(&s, &p("list.2.Struct.a")), None);
    }
}
