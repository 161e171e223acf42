//! Reading fields out of stream entries and Lua replies, with typed errors instead of panics.

use std::collections::HashMap;

use redis::Value;

use super::error::CoordError;

/// The field `name` of a stream entry as raw bytes.
pub(crate) fn bytes(
    op: &'static str,
    map: &HashMap<String, Value>,
    name: &str,
) -> Result<Vec<u8>, CoordError> {
    match map.get(name) {
        Some(Value::BulkString(b)) => Ok(b.clone()),
        Some(Value::SimpleString(s)) => Ok(s.clone().into_bytes()),
        Some(Value::Int(i)) => Ok(i.to_string().into_bytes()),
        Some(other) => Err(CoordError::protocol(
            op,
            format!("field {name} has type {other:?}"),
        )),
        None => Err(CoordError::protocol(op, format!("field {name} missing"))),
    }
}

/// The field `name` of a stream entry as UTF-8 text.
pub(crate) fn text(
    op: &'static str,
    map: &HashMap<String, Value>,
    name: &str,
) -> Result<String, CoordError> {
    String::from_utf8(bytes(op, map, name)?)
        .map_err(|_| CoordError::protocol(op, format!("field {name} is not UTF-8")))
}

/// The field `name` of a stream entry as an unsigned number.
pub(crate) fn number(
    op: &'static str,
    map: &HashMap<String, Value>,
    name: &str,
) -> Result<u64, CoordError> {
    text(op, map, name)?
        .parse()
        .map_err(|_| CoordError::protocol(op, format!("field {name} is not a number")))
}

/// Converts a Redis value to `T`, reporting a protocol error for `op` on a wrong shape.
pub(crate) fn parse<T: redis::FromRedisValue>(op: &'static str, v: Value) -> Result<T, CoordError> {
    redis::from_redis_value(v).map_err(|e| CoordError::protocol(op, e.to_string()))
}
