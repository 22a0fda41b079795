//! Bounds on the identifiers and keys clients choose: a room, participant
//! or identity id, an idempotency key or a correlation id is at most
//! [`MAX_ID_BYTES`] bytes of text without control characters.
//!
//! The bound is checked where a value is created or stored, never where an
//! existing resource is looked up: a record written before the bound (or by
//! another surface) can still be read and removed by its id.

use crate::error::ApiError;

/// Largest identifier or key a client may choose, in bytes of UTF-8.
pub const MAX_ID_BYTES: usize = 256;

/// Checks one client-chosen identifier named `field` in messages.
///
/// # Errors
/// 400 `invalid_field` naming the field when it is longer than
/// [`MAX_ID_BYTES`] or holds a control character.
pub fn check(field: &str, value: &str) -> Result<(), ApiError> {
    if value.len() > MAX_ID_BYTES {
        return Err(ApiError::bad_request(
            "invalid_field",
            format!(
                "invalid field `{field}`: at most {MAX_ID_BYTES} bytes, got {}",
                value.len()
            ),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "invalid_field",
            format!("invalid field `{field}`: must not contain control characters"),
        ));
    }
    Ok(())
}

/// [`check`] for an optional value.
///
/// # Errors
/// As [`check`].
pub fn check_opt(field: &str, value: Option<&str>) -> Result<(), ApiError> {
    value.map_or(Ok(()), |v| check(field, v))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn long_ids_and_control_characters_are_refused_naming_the_field() {
        assert!(check("id", &"a".repeat(MAX_ID_BYTES)).is_ok());
        assert!(check("id", "room é 1").is_ok());
        let e = check("id", &"a".repeat(MAX_ID_BYTES + 1)).unwrap_err();
        assert_eq!(e.code, "invalid_field");
        assert!(e.message.contains("`id`"), "{}", e.message);
        // A multi-byte character counts by its bytes.
        assert!(check("id", &"é".repeat(MAX_ID_BYTES / 2 + 1)).is_err());
        let e = check("idempotency_key", "a\nb").unwrap_err();
        assert!(e.message.contains("idempotency_key"), "{}", e.message);
        assert!(check_opt("x", None).is_ok());
    }
}
