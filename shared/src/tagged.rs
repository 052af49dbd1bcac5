//! Internally tagged enums (`{"type":"send", ...}`) read tag first.
//!
//! serde's derived reading of an internally tagged enum copies the whole
//! object into a buffer of its own (every string and map allocated again)
//! before it looks at the tag, then reads the variant from that buffer.
//! On the server that was a visible share of every message's cost: each
//! socket `send`, and each command and reply crossing RabbitMQ, went
//! through it. serde writes the tag first, and so does every client we
//! know of, so [`deserialize`] reads the first key and, when it is the
//! tag, reads the variant's fields straight from the rest of the object.
//! An object with its tag elsewhere (JSON objects have no order) is
//! buffered and read the same way: what is accepted does not change, only
//! what it costs (one exception: a second tag after a leading one is
//! ignored as an unknown key, where the derive refuses it).
//!
//! An enum opts in by implementing [`TagFirst`], reading each variant's
//! fields into a plain struct with [`fields`], and calling [`deserialize`]
//! from its `Deserialize`.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::value::{MapAccessDeserializer, MapDeserializer};
use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};

/// The key that names the variant.
pub const TAG: &str = "type";

/// An internally tagged enum whose variants can be read from the object's
/// entries other than the tag.
pub trait TagFirst: Sized {
    /// The variants' tags, for the error naming what was expected.
    const VARIANTS: &'static [&'static str];

    /// Reads the variant `tag` names from the object's other entries,
    /// every one of them (see [`fields`] and [`no_fields`]).
    fn variant<'de, A: MapAccess<'de>>(tag: &str, rest: A) -> Result<Self, A::Error>;
}

/// Reads a `T` from an object tagged by [`TAG`]: straight when the tag
/// comes first, through a buffer when it does not.
pub fn deserialize<'de, T: TagFirst, D: Deserializer<'de>>(deserializer: D) -> Result<T, D::Error> {
    deserializer.deserialize_map(TagFirstVisitor(PhantomData))
}

/// Reads the rest of the object as the struct `F` (its unknown keys
/// ignored, as serde's derive does).
pub fn fields<'de, F: Deserialize<'de>, A: MapAccess<'de>>(rest: A) -> Result<F, A::Error> {
    F::deserialize(MapAccessDeserializer::new(rest))
}

/// Skips the rest of the object, for a variant without fields.
pub fn no_fields<'de, A: MapAccess<'de>>(mut rest: A) -> Result<(), A::Error> {
    while rest.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

/// The variant for `tag`, or the error naming the ones there are.
pub fn unknown<T: TagFirst, E: de::Error>(tag: &str) -> E {
    E::unknown_variant(tag, T::VARIANTS)
}

struct TagFirstVisitor<T>(PhantomData<T>);

impl<'de, T: TagFirst> Visitor<'de> for TagFirstVisitor<T> {
    type Value = T;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        write!(formatter, "an object tagged by \"{TAG}\"")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<T, A::Error> {
        let Some(first) = map.next_key::<Text<'de>>()? else {
            return Err(de::Error::missing_field(TAG));
        };
        if first.0 == TAG {
            let tag = map.next_value::<Text<'de>>()?;
            return T::variant(&tag.0, map);
        }
        let mut tag: Option<Text<'de>> = None;
        let mut rest = vec![(first.0.into_owned(), map.next_value::<serde_json::Value>()?)];
        while let Some(key) = map.next_key::<Text<'de>>()? {
            if key.0 == TAG {
                if tag.is_some() {
                    return Err(de::Error::duplicate_field(TAG));
                }
                tag = Some(map.next_value()?);
            } else {
                rest.push((key.0.into_owned(), map.next_value()?));
            }
        }
        let tag = tag.ok_or_else(|| de::Error::missing_field(TAG))?;
        let mut buffered = MapDeserializer::new(rest.into_iter());
        let value = T::variant(&tag.0, &mut buffered).map_err(de::Error::custom)?;
        buffered.end().map_err(de::Error::custom)?;
        Ok(value)
    }
}

/// A string borrowed from the input when it can be (no escapes in it).
struct Text<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;

            fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                formatter.write_str("a string")
            }

            fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(text)))
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(text.to_owned())))
            }

            fn visit_string<E: de::Error>(self, text: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(text)))
            }
        }
        deserializer.deserialize_str(TextVisitor)
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::*;

    /// A small enum read both ways: serde's derive (`Derived`) and tag
    /// first (`Shape`); the two must agree on everything.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(
        tag = "type",
        rename_all = "camelCase",
        rename_all_fields = "camelCase"
    )]
    enum Derived {
        Circle { radius_cm: u32 },
        Dot,
    }

    #[derive(Debug, PartialEq)]
    enum Shape {
        Circle { radius_cm: u32 },
        Dot,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct CircleFields {
        radius_cm: u32,
    }

    impl TagFirst for Shape {
        const VARIANTS: &'static [&'static str] = &["circle", "dot"];

        fn variant<'de, A: MapAccess<'de>>(tag: &str, rest: A) -> Result<Self, A::Error> {
            match tag {
                "circle" => fields::<CircleFields, _>(rest).map(|f| Shape::Circle {
                    radius_cm: f.radius_cm,
                }),
                "dot" => no_fields(rest).map(|()| Shape::Dot),
                other => Err(unknown::<Self, _>(other)),
            }
        }
    }

    impl<'de> Deserialize<'de> for Shape {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            deserialize(deserializer)
        }
    }

    fn both(json: &str) -> (Result<Derived, String>, Result<Shape, String>) {
        (
            serde_json::from_str(json).map_err(|e| e.to_string()),
            serde_json::from_str(json).map_err(|e| e.to_string()),
        )
    }

    #[test]
    fn reads_what_the_derive_reads_wherever_the_tag_is() {
        for json in [
            r#"{"type":"circle","radiusCm":3}"#,
            r#"{"radiusCm":3,"type":"circle"}"#,
            r#"{"type":"circle","extra":[1,{"a":2}],"radiusCm":3}"#,
            r#"{"extra":null,"radiusCm":3,"type":"circle"}"#,
        ] {
            assert_eq!(
                both(json),
                (
                    Ok(Derived::Circle { radius_cm: 3 }),
                    Ok(Shape::Circle { radius_cm: 3 })
                ),
                "{json}"
            );
        }
        for json in [
            r#"{"type":"dot"}"#,
            r#"{"type":"dot","radiusCm":3}"#,
            r#"{"radiusCm":3,"type":"dot"}"#,
        ] {
            assert_eq!(both(json), (Ok(Derived::Dot), Ok(Shape::Dot)), "{json}");
        }
        let escaped: Shape = serde_json::from_str(r#"{"typ\u0065":"circl\u0065","radiusCm":1}"#)
            .expect("escaped key and tag");
        assert_eq!(escaped, Shape::Circle { radius_cm: 1 });
    }

    #[test]
    fn refuses_what_the_derive_refuses() {
        for json in [
            r#"{}"#,
            r#"{"radiusCm":3}"#,
            r#"{"type":"square","radiusCm":3}"#,
            r#"{"radiusCm":3,"type":"square"}"#,
            r#"{"type":"circle"}"#,
            r#"{"type":"circle","radiusCm":"three"}"#,
            r#"{"radiusCm":"three","type":"circle"}"#,
            r#"{"type":7}"#,
            r#"{"radiusCm":3,"type":"circle","type":"dot"}"#,
            r#"[]"#,
            r#""circle""#,
        ] {
            let (derived, ours) = both(json);
            assert!(
                derived.is_err() && ours.is_err(),
                "{json}: {derived:?} {ours:?}"
            );
        }
        let (_, unknown) = both(r#"{"type":"square"}"#);
        let message = unknown.expect_err("not a variant");
        assert!(
            message.contains("square") && message.contains("circle"),
            "{message}"
        );
    }
}
