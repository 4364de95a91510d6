//! Which record a command is about: scope, handler and key, checked as the runtime checks them.

use idem_runtime::{IdempotencyKey, RecordId};
use serde_json::{Map, Value, json};

use crate::failure::Failure;

/// The record's identity; the key is validated by the runtime's own parser.
pub fn id(scope: &str, handler: &str, key: &str) -> Result<RecordId, Failure> {
    if handler.is_empty() {
        return Err(Failure::usage("--handler must name the record's handler"));
    }
    let key =
        IdempotencyKey::parse(key).map_err(|e| Failure::usage(format!("invalid key: {e}")))?;
    Ok(RecordId::new(scope, handler.to_owned(), key))
}

/// `key K on handler H`, plus `in scope S` when there is one: the user's own input.
pub fn describe(id: &RecordId) -> String {
    let mut text = format!("key {} on handler {}", id.key.as_str(), id.handler);
    if !id.scope.is_empty() {
        text.push_str(&format!(" in scope {}", id.scope));
    }
    text
}

/// The command's name and the record's identity, the start of every record command's JSON.
pub fn json_head(command: &str, id: &RecordId) -> Map<String, Value> {
    let head = json!({
        "command": command,
        "scope": id.scope,
        "handler": id.handler,
        "key": id.key.as_str(),
    });
    match head {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failure::Kind;

    #[test]
    fn keys_are_checked_like_the_runtime_does() {
        let ok = id("tenant-1", "payments::create_payment", "order-0001");
        let ok = ok.map(|id| describe(&id)).ok();
        assert_eq!(
            ok.as_deref(),
            Some("key order-0001 on handler payments::create_payment in scope tenant-1")
        );
        for bad in ["short", "has space in it", ""] {
            let failure = id("", "h", bad).err().map(|f| f.kind());
            assert_eq!(failure, Some(Kind::Usage), "{bad:?}");
        }
        let no_handler = id("", "", "order-0001").err().map(|f| f.kind());
        assert_eq!(no_handler, Some(Kind::Usage));
    }
}
