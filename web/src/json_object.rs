//! Request bodies are JSON objects, never arrays.
//!
//! serde's derived `Deserialize` for a struct also accepts a JSON array of the field values
//! in order (`[null, null]` for a struct of optional fields), so a body like `["admin","pw"]`
//! was read as `{"username":"admin","password":"pw"}` and `PATCH /api/v1/channels/{name}`
//! with `[null, null]` wrote an empty update (found by schemathesis's negative data). Every
//! request body of the API is documented as an object; `ObjectOnly<T>` reads `T` from a JSON
//! object only, with `T`'s own rules (unknown and duplicate fields, renames, defaults), and
//! refuses anything else as a type error (400 `invalid_json`).

use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};

pub struct ObjectOnly<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for ObjectOnly<T> {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct ObjectVisitor<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
            type Value = T;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map))
            }
        }

        de.deserialize_map(ObjectVisitor(PhantomData))
            .map(ObjectOnly)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde::Deserialize;

    use super::ObjectOnly;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Patch {
        #[serde(default)]
        title: Option<String>,
        #[serde(default, rename = "type")]
        kind: Option<u64>,
    }

    fn read(text: &str) -> Result<Patch, serde_json::Error> {
        serde_json::from_str::<ObjectOnly<Patch>>(text).map(|o| o.0)
    }

    #[test]
    fn objects_read_as_before_and_arrays_are_refused() {
        assert_eq!(
            read(r#"{"title":"t","type":3}"#).unwrap(),
            Patch {
                title: Some("t".into()),
                kind: Some(3)
            }
        );
        assert_eq!(read("{}").unwrap().title, None);
        assert!(
            serde_json::from_str::<Patch>("[null, null]").is_ok(),
            "serde's own reading"
        );
        for bad in ["[null, null]", "[]", "null", "3", r#""x""#] {
            let e = read(bad).unwrap_err();
            assert!(e.to_string().contains("a JSON object"), "{bad}: {e}");
        }
        assert!(read(r#"{"x":1}"#).is_err(), "unknown field");
        assert!(
            read(r#"{"title":"a","title":"b"}"#).is_err(),
            "duplicate field"
        );
    }
}
