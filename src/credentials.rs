//! The Jenkins identity the proxy speaks as.
//!
//! This module owns [`Secret`], a string that never prints itself, and
//! [`Credentials`], which turns a user name and a password or API token into
//! the `Authorization: Basic …` header value once, at start-up, marked
//! sensitive so that `Debug` of a header map never shows it. Reading secrets
//! from files and environment variables is `config`'s job; deciding whether a
//! request gets a crumb is `proxy`'s.

use std::fmt;

use base64::Engine as _;
use http::HeaderValue;

/// A secret string: `Debug` and `Display` print a marker, never the value.
///
/// The only way to the value is [`Secret::expose`], so every use is easy to
/// find with grep. There is no `Clone` and no `Serialize` on purpose.
pub(crate) struct Secret(String);

impl Secret {
    pub(crate) fn new(value: String) -> Self {
        Self(value)
    }

    /// The secret itself. Call sites must not log or format the result.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Which kind of secret the user configured. It matters because Jenkins
/// exempts requests authenticated with an API token from CSRF checks
/// (`ApiCrumbExclusion`, Jenkins 2.96+), so `crumb.mode = "auto"` sends no
/// crumb with a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SecretKind {
    Password,
    ApiToken,
}

impl SecretKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            SecretKind::Password => "password",
            SecretKind::ApiToken => "api token",
        }
    }
}

/// The configured Jenkins user, with the `Authorization` header value
/// precomputed (tower-http's `AddAuthorization` does the same, but leaves
/// `set_sensitive` opt-in; here it is always on).
pub(crate) struct Credentials {
    username: String,
    kind: SecretKind,
    authorization: HeaderValue,
}

impl Credentials {
    /// Builds the `Basic` header value for `username:secret` (RFC 7617).
    ///
    /// # Errors
    /// Fails only if the encoded value is not a valid header value, which
    /// base64 output never is; the error is kept rather than a panic so that
    /// the request path has none.
    pub(crate) fn new(
        username: String,
        kind: SecretKind,
        secret: &Secret,
    ) -> Result<Self, http::header::InvalidHeaderValue> {
        let encoded = base64::engine::general_purpose::STANDARD
            .encode(format!("{username}:{}", secret.expose()));
        let mut authorization = HeaderValue::try_from(format!("Basic {encoded}"))?;
        authorization.set_sensitive(true);
        Ok(Self {
            username,
            kind,
            authorization,
        })
    }

    pub(crate) fn username(&self) -> &str {
        &self.username
    }

    pub(crate) fn kind(&self) -> SecretKind {
        self.kind
    }

    /// The `Authorization` value, already marked sensitive.
    pub(crate) fn authorization(&self) -> &HeaderValue {
        &self.authorization
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("kind", &self.kind)
            .field("authorization", &"[redacted]")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_value_is_rfc7617_and_sensitive() {
        let secret = Secret::new("s3cr3t-pw".into());
        let creds = Credentials::new("alice".into(), SecretKind::Password, &secret).unwrap();
        // base64("alice:s3cr3t-pw")
        assert_eq!(creds.authorization(), "Basic YWxpY2U6czNjcjN0LXB3");
        assert!(creds.authorization().is_sensitive());
    }

    #[test]
    fn debug_and_display_redact() {
        let secret = Secret::new("s3cr3t-pw".into());
        let creds = Credentials::new("alice".into(), SecretKind::ApiToken, &secret).unwrap();
        for text in [
            format!("{secret:?}"),
            format!("{secret}"),
            format!("{creds:?}"),
        ] {
            assert!(!text.contains("s3cr3t-pw"), "{text}");
            assert!(!text.contains("YWxpY2U6czNjcjN0LXB3"), "{text}");
        }
        assert!(format!("{creds:?}").contains("alice"));
    }
}
