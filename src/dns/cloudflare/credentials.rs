//! Cloudflare credentials: the `Secret` wrapper that never prints its value,
//! reading a token or legacy key from environment variables or a token file,
//! and the checks that keep them valid as HTTP header values.

use std::fmt;
use std::path::Path;

use reqwest::header::HeaderValue;

/// A credential. `Debug` and `Display` print `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself; only for building request headers.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// How requests authenticate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credentials {
    /// `Authorization: Bearer <token>` (preferred: a token scoped to Zone.DNS:Edit).
    Token(Secret),
    /// Legacy global key: `X-Auth-Email` + `X-Auth-Key`.
    Legacy { email: String, key: Secret },
}

impl Credentials {
    /// Reads credentials, in this order: the API token from environment variable
    /// `token_env`; the API token from `token_file` (surrounding whitespace
    /// trimmed); the legacy email and key from `email_env` and `key_env`.
    /// Unset or empty variables are skipped; an unreadable or empty token file is
    /// an error. Errors name the variable or file, never the value.
    pub fn from_env_or_file(
        token_env: Option<&str>,
        token_file: Option<&Path>,
        email_env: Option<&str>,
        key_env: Option<&str>,
    ) -> Result<Credentials, String> {
        let mut tried = Vec::new();
        if let Some(var) = token_env {
            match read_env(var)? {
                Some(token) => {
                    check_header_safe(&token).map_err(|e| format!("environment variable {var}: {e}"))?;
                    return Ok(Credentials::Token(Secret(token)));
                }
                None => tried.push(format!("environment variable {var} is not set or empty")),
            }
        }
        if let Some(path) = token_file {
            crate::secret::check_private(path).map_err(|e| format!("API token file {}: {e}", path.display()))?;
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("API token file {}: cannot read: {}", path.display(), e.kind()))?;
            let token = text.trim();
            if token.is_empty() {
                return Err(format!("API token file {}: empty", path.display()));
            }
            check_header_safe(token).map_err(|e| format!("API token file {}: {e}", path.display()))?;
            return Ok(Credentials::Token(Secret(token.to_string())));
        }
        match (email_env, key_env) {
            (Some(evar), Some(kvar)) => match (read_env(evar)?, read_env(kvar)?) {
                (Some(email), Some(key)) => {
                    check_header_safe(&email).map_err(|e| format!("environment variable {evar}: {e}"))?;
                    check_header_safe(&key).map_err(|e| format!("environment variable {kvar}: {e}"))?;
                    return Ok(Credentials::Legacy {
                        email,
                        key: Secret(key),
                    });
                }
                (None, None) => tried.push(format!("environment variables {evar} and {kvar} are not set or empty")),
                (None, Some(_)) => {
                    return Err(format!(
                        "environment variable {evar} is not set or empty (needed with {kvar})"
                    ))
                }
                (Some(_), None) => {
                    return Err(format!(
                        "environment variable {kvar} is not set or empty (needed with {evar})"
                    ))
                }
            },
            (Some(var), None) | (None, Some(var)) => {
                return Err(format!(
                    "legacy credentials need both an email and a key variable; only {var} was named"
                ))
            }
            (None, None) => {}
        }
        if tried.is_empty() {
            Err("no Cloudflare credentials configured (name a token variable, a token file, or email and key variables)"
                .to_string())
        } else {
            Err(format!("no Cloudflare credentials found: {}", tried.join("; ")))
        }
    }

    pub(super) fn secret(&self) -> &str {
        match self {
            Credentials::Token(t) => t.expose(),
            Credentials::Legacy { key, .. } => key.expose(),
        }
    }
}

fn read_env(var: &str) -> Result<Option<String>, String> {
    match std::env::var(var) {
        Ok(v) => {
            let v = v.trim();
            Ok(if v.is_empty() { None } else { Some(v.to_string()) })
        }
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(format!("environment variable {var} is not valid UTF-8")),
    }
}

fn check_header_safe(value: &str) -> Result<(), String> {
    if value.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err("contains whitespace or characters not allowed in an HTTP header".to_string())
    }
}

pub(super) fn sensitive(value: &str, what: &str) -> Result<HeaderValue, String> {
    let mut v = HeaderValue::from_str(value)
        .map_err(|_| format!("cloudflare: the {what} contains characters not allowed in an HTTP header"))?;
    v.set_sensitive(true);
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_file_other_users_can_read_is_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("cf-token");
        std::fs::write(&f, "tok-value").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
            let e = Credentials::from_env_or_file(None, Some(&f), None, None).unwrap_err();
            assert!(e.contains("cf-token") && e.contains("chmod 600"), "{e}");
            assert!(!e.contains("tok-value"), "{e}");
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let c = Credentials::from_env_or_file(None, Some(&f), None, None).unwrap();
        assert_eq!(c, Credentials::Token(Secret::new("tok-value")));
    }
}
