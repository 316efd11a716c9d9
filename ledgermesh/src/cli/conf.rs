//! How each field of a role's settings is written in a config file, in
//! the environment and in `config check`: every value is a string or a
//! number in TOML (an array for a flag that may be repeated), read with the
//! same parser the flag uses, and written back the way a person would type
//! it. Used as `#[serde(with = "conf::…")]` on the fields of the role
//! structs in `args.rs`.
//!
//! Values are checked with the flag's own parser before they get here (see
//! `config.rs`), so the errors below are a second line, not the message a
//! person sees for a bad value.

use serde::de::{self, Deserializer, Visitor};
use serde::ser::{SerializeSeq, Serializer};
use serde::Deserialize;
use std::fmt::{self, Display};
use std::str::FromStr;

/// One value as a person typed it: a string, a number or a boolean.
struct Token(String);

impl<'de> Deserialize<'de> for Token {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Token;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Token, E> {
                Ok(Token(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Token, E> {
                Ok(Token(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Token, E> {
                Ok(Token(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Token, E> {
                Ok(Token(v.to_string()))
            }
            fn visit_i128<E: de::Error>(self, v: i128) -> Result<Token, E> {
                Ok(Token(v.to_string()))
            }
            fn visit_u128<E: de::Error>(self, v: u128) -> Result<Token, E> {
                Ok(Token(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Token, E> {
                Ok(Token(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// One token, or an array of them.
#[derive(Deserialize)]
#[serde(untagged)]
enum Tokens {
    Many(Vec<Token>),
    One(Token),
}

fn parsed<T, E: de::Error>(s: &str, parse: impl Fn(&str) -> Result<T, String>) -> Result<T, E> {
    parse(s).map_err(|e| E::custom(format!("invalid value '{s}': {e}")))
}

fn from_str<T: FromStr>(s: &str) -> Result<T, String>
where
    T::Err: Display,
{
    s.parse().map_err(|e: T::Err| e.to_string())
}

/// A scalar read with its `FromStr` and written with its `Display`.
pub mod one {
    use super::*;

    pub fn serialize<T: Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    pub fn deserialize<'de, T: FromStr, D: Deserializer<'de>>(d: D) -> Result<T, D::Error>
    where
        T::Err: Display,
    {
        let Token(s) = Token::deserialize(d)?;
        parsed(&s, from_str)
    }
}

/// An optional scalar (see [`one`]).
pub mod opt {
    use super::*;

    pub fn serialize<T: Display, S: Serializer>(v: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.collect_str(v),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, T: FromStr, D: Deserializer<'de>>(d: D) -> Result<Option<T>, D::Error>
    where
        T::Err: Display,
    {
        match Option::<Token>::deserialize(d)? {
            Some(Token(s)) => parsed(&s, from_str).map(Some),
            None => Ok(None),
        }
    }
}

/// A flag that may be repeated: an array, or one value alone.
pub mod many {
    use super::*;

    pub fn serialize<T: Display, S: Serializer>(v: &[T], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(v.len()))?;
        for item in v {
            seq.serialize_element(&item.to_string())?;
        }
        seq.end()
    }

    pub fn deserialize<'de, T: FromStr, D: Deserializer<'de>>(d: D) -> Result<Vec<T>, D::Error>
    where
        T::Err: Display,
    {
        let tokens = match Tokens::deserialize(d)? {
            Tokens::Many(v) => v,
            Tokens::One(t) => vec![t],
        };
        tokens.iter().map(|Token(s)| parsed(s, from_str)).collect()
    }
}

/// The way a size is typed: the largest exact K, M or G, else bytes.
pub fn size_text(bytes: u64) -> String {
    for (suffix, shift) in [("G", 30), ("M", 20), ("K", 10)] {
        if bytes != 0 && bytes.is_multiple_of(1 << shift) {
            return format!("{}{suffix}", bytes >> shift);
        }
    }
    bytes.to_string()
}

/// A size as typed (`8M`, `1G`, `4096`), as `--…-bytes` flags take it.
pub fn size_of(s: &str) -> Result<u64, String> {
    ledgermesh_node::source::parse_size(s).ok_or_else(|| format!("{s:?} is not a size like 8M"))
}

/// A size in bytes, typed with a K, M or G suffix or without.
pub mod size {
    use super::*;

    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&size_text(*v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let Token(s) = Token::deserialize(d)?;
        parsed(&s, size_of)
    }
}

/// An optional size (see [`size`]).
pub mod opt_size {
    use super::*;

    pub fn serialize<S: Serializer>(v: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_str(&size_text(*v)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        match Option::<Token>::deserialize(d)? {
            Some(Token(s)) => parsed(&s, size_of).map(Some),
            None => Ok(None),
        }
    }
}

/// One of a flag's named values (a `clap::ValueEnum`).
pub mod choice {
    use super::*;
    use clap::ValueEnum;

    pub fn serialize<T: ValueEnum, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        let name = v.to_possible_value().expect("every value has a name");
        s.serialize_str(name.get_name())
    }

    pub fn deserialize<'de, T: ValueEnum, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
        let Token(s) = Token::deserialize(d)?;
        parsed(&s, |s| T::from_str(s, false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_written_as_typed() {
        assert_eq!(size_text(16 << 20), "16M");
        assert_eq!(size_text(1 << 30), "1G");
        assert_eq!(size_text(1536), "1536");
        assert_eq!(size_text(3 << 10), "3K");
        assert_eq!(size_text(0), "0");
        for n in [0, 1, 1023, 1024, 16 << 20, 5 << 30, u64::MAX] {
            assert_eq!(size_of(&size_text(n)), Ok(n), "{n}");
        }
    }
}
