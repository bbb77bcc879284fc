//! API-keys files → `Access::from_toml`, then callers (a key, a malformed
//! header, a client certificate name) checked against what loaded.
//! Never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use revocd::auth::{Access, AuthError};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(access) = Access::from_toml(text) else {
        return;
    };
    assert!(matches!(access, Access::Keys(ref keys) if !keys.is_empty()));
    assert_eq!(access.caller(None, None), Ok(None));
    assert_eq!(
        access.caller(Some(b"Basic x"), None),
        Err(AuthError::MalformedHeader)
    );
    // Whether or not they match an entry, they are answered.
    let _ = access.caller(Some(b"Bearer revocd-fuzz-key"), None);
    let _ = access.caller(None, Some("revocd-agent"));
});
