//! Keys repeated inside a JSON body's nested objects.
//!
//! `serde_json::Value` keeps the last copy of a repeated key and says nothing, and
//! servers differ on which copy they use (see `repeated.rs`). At the top level a
//! summary sees every copy (`params.rs` reads members in order); inside a nested object
//! (`{"msg": {"to": "alice@…", …, "to": "mallory@…"}}`) it did not, and a body excerpt
//! cut in the middle could show the first copy and hide the second. So the body is
//! walked once, every object's keys compared, and the card warns of each repeat by its
//! path (`msg.to`).
//!
//! Written here: serde's visitor walks the document without building it; no crate
//! reports repeated keys.

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use std::cell::RefCell;
use std::collections::HashSet;

/// Longest path shown for a repeat.
const PATH_CHARS: usize = 80;

/// Paths (`msg.to`, `items[].id`) of keys repeated inside objects below the top level
/// of `body`, at most `max`, in document order; none if `body` is not JSON.
pub(crate) fn repeated_keys(body: &[u8], max: usize) -> Vec<String> {
    let found = RefCell::new(Vec::new());
    let walk = Walk {
        path: String::new(),
        depth: 0,
        found: &found,
        max,
    };
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    // Not JSON, or cut short: what was found before the error still stands.
    let _ = walk.deserialize(&mut deserializer);
    found.into_inner()
}

struct Walk<'a> {
    path: String,
    depth: usize,
    found: &'a RefCell<Vec<String>>,
    max: usize,
}

impl Walk<'_> {
    fn below(&self, step: &str) -> Self {
        let path = match (self.path.is_empty(), step) {
            (_, "[]") => format!("{}[]", self.path),
            (true, _) => step.to_string(),
            (false, _) => format!("{}.{step}", self.path),
        };
        Walk {
            path: path.chars().take(PATH_CHARS).collect(),
            depth: self.depth + 1,
            found: self.found,
            max: self.max,
        }
    }
}

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("JSON")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            let repeated = !seen.insert(key.clone());
            let below = self.below(&key);
            if repeated && self.depth > 0 {
                let mut found = self.found.borrow_mut();
                if found.len() < self.max && !found.contains(&below.path) {
                    found.push(below.path.clone());
                }
            }
            map.next_value_seed(below)?;
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(self.below("[]"))?.is_some() {}
        Ok(())
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_inside_objects_are_found_by_path() {
        let body = br#"{"msg":{"to":"alice@corp.example","note":"x","to":"mallory@evil.example"},
            "items":[{"id":1,"id":2},{"id":3}],"top":1,"top":2}"#;
        assert_eq!(repeated_keys(body, 10), ["msg.to", "items[].id"]);
        assert!(repeated_keys(br#"{"a":{"b":1,"c":2}}"#, 10).is_empty());
        assert!(repeated_keys(b"not json", 10).is_empty());
        assert_eq!(repeated_keys(body, 1), ["msg.to"]);
    }
}
