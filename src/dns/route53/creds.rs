//! AWS credentials, found the way the AWS tools find them: the environment
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`), then
//! the shared credentials file's profile (`AWS_SHARED_CREDENTIALS_FILE` or
//! `~/.aws/credentials`, profile `AWS_PROFILE` or `default`), then the
//! container endpoint (`AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`), then the
//! instance metadata service with an IMDSv2 session token. Temporary ones
//! are fetched again before they expire. None of them is ever logged: the
//! `Debug` form shows the key id's first four characters only.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde::Deserialize;

/// One set of credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct Keys {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
    /// When temporary credentials stop working.
    pub expires: Option<SystemTime>,
    /// Where they came from, for messages ("environment", "profile default of FILE", …).
    pub source: String,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown: String = self.access_key_id.chars().take(4).collect();
        write!(f, "Keys({shown}…, from {})", self.source)
    }
}

/// Where to look.
#[derive(Clone, Debug)]
pub struct Sources {
    /// A profile named in the configuration (else `AWS_PROFILE`, else `default`).
    pub profile: Option<String>,
    /// A credentials file named in the configuration (else the environment's or `~/.aws/credentials`).
    pub file: Option<PathBuf>,
    /// Whether the instance metadata service may be asked.
    pub imds: bool,
    pub imds_endpoint: String,
    pub container_endpoint: String,
}

impl Default for Sources {
    fn default() -> Self {
        Sources {
            profile: None,
            file: None,
            imds: true,
            imds_endpoint: "http://169.254.169.254".into(),
            container_endpoint: "http://169.254.170.2".into(),
        }
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// The `[profile]` section of an INI-style credentials file.
pub fn from_file_text(text: &str, profile: &str, source: &str) -> Option<Keys> {
    let mut section = String::new();
    let (mut id, mut secret, mut token) = (None, None, None);
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.trim().trim_start_matches("profile ").trim().to_string();
            continue;
        }
        if section != profile {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else { continue };
        let v = v.trim().to_string();
        match k.trim() {
            "aws_access_key_id" => id = Some(v),
            "aws_secret_access_key" => secret = Some(v),
            "aws_session_token" => token = Some(v),
            _ => {}
        }
    }
    Some(Keys {
        access_key_id: id?,
        secret_access_key: secret?,
        session_token: token,
        expires: None,
        source: source.to_string(),
    })
}

/// The JSON the container and instance metadata endpoints answer with.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Temporary {
    access_key_id: String,
    secret_access_key: String,
    token: Option<String>,
    expiration: Option<String>,
}

impl Temporary {
    fn keys(self, source: String) -> Keys {
        let expires = self
            .expiration
            .as_deref()
            .and_then(|e| humantime::parse_rfc3339_weak(e.trim_end_matches('Z')).ok());
        Keys {
            access_key_id: self.access_key_id,
            secret_access_key: self.secret_access_key,
            session_token: self.token,
            expires,
            source,
        }
    }
}

async fn container(client: &reqwest::Client, s: &Sources) -> Result<Option<Keys>, String> {
    let Some(path) = env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") else {
        return Ok(None);
    };
    let url = format!("{}{path}", s.container_endpoint);
    let t: Temporary = client
        .get(&url)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| format!("container credentials endpoint: {}", e.without_url()))?
        .json()
        .await
        .map_err(|e| format!("container credentials endpoint: not credentials: {}", e.without_url()))?;
    Ok(Some(t.keys("the container credentials endpoint".into())))
}

/// IMDSv2: a session token first (PUT), then the role's credentials with it.
async fn imds(client: &reqwest::Client, s: &Sources) -> Result<Option<Keys>, String> {
    let base = s.imds_endpoint.trim_end_matches('/');
    let token = match client
        .put(format!("{base}/latest/api/token"))
        .header("x-aws-ec2-metadata-token-ttl-seconds", "21600")
        .timeout(Duration::from_secs(1))
        .send()
        .await
    {
        Ok(r) if r.status().is_success() => r.text().await.map_err(|e| e.without_url().to_string())?,
        // Not on an instance (or IMDS off): no credentials from here.
        Ok(_) | Err(_) => return Ok(None),
    };
    let get = |path: String| {
        client
            .get(format!("{base}/latest/meta-data/iam/security-credentials/{path}"))
            .header("x-aws-ec2-metadata-token", token.trim())
            .timeout(Duration::from_secs(2))
            .send()
    };
    let role = get(String::new())
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| format!("instance metadata: no role: {}", e.without_url()))?
        .text()
        .await
        .map_err(|e| e.without_url().to_string())?;
    let role = role.lines().next().unwrap_or("").trim().to_string();
    if role.is_empty() {
        return Err("instance metadata: the instance has no IAM role".into());
    }
    let t: Temporary = get(role.clone())
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| format!("instance metadata: credentials of role {role}: {}", e.without_url()))?
        .json()
        .await
        .map_err(|e| format!("instance metadata: not credentials: {}", e.without_url()))?;
    Ok(Some(t.keys(format!("instance role {role}"))))
}

/// Finds credentials, in the order above; the error lists where it looked.
pub async fn resolve(client: &reqwest::Client, s: &Sources) -> Result<Keys, String> {
    if let (Some(id), Some(secret)) = (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
        return Ok(Keys {
            access_key_id: id,
            secret_access_key: secret,
            session_token: env("AWS_SESSION_TOKEN"),
            expires: None,
            source: "the environment (AWS_ACCESS_KEY_ID)".into(),
        });
    }
    let profile = s
        .profile
        .clone()
        .or_else(|| env("AWS_PROFILE"))
        .unwrap_or_else(|| "default".into());
    let file = s
        .file
        .clone()
        .or_else(|| env("AWS_SHARED_CREDENTIALS_FILE").map(PathBuf::from))
        .or_else(|| env("HOME").map(|h| PathBuf::from(h).join(".aws/credentials")));
    if let Some(f) = &file {
        if let Ok(text) = std::fs::read_to_string(f) {
            crate::secret::check_private(f).map_err(|m| format!("{}: {m}", f.display()))?;
            let source = format!("profile {profile} of {}", f.display());
            if let Some(k) = from_file_text(&text, &profile, &source) {
                return Ok(k);
            }
        }
    }
    if let Some(k) = container(client, s).await? {
        return Ok(k);
    }
    if s.imds {
        if let Some(k) = imds(client, s).await? {
            return Ok(k);
        }
    }
    Err(format!(
        "no AWS credentials: not in the environment (AWS_ACCESS_KEY_ID), not in profile {profile} of {}, no \
         container endpoint{}",
        file.map(|f| f.display().to_string())
            .unwrap_or_else(|| "~/.aws/credentials".into()),
        if s.imds {
            ", no instance role"
        } else {
            " (instance metadata not asked)"
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_profile_is_read_from_its_section_only() {
        let text = "[default]\naws_access_key_id = AKIADEFAULT\naws_secret_access_key = s1\n\n\
                    [profile ops]\naws_access_key_id=AKIAOPS\naws_secret_access_key=s2\naws_session_token = t\n";
        let d = from_file_text(text, "default", "f").unwrap();
        assert_eq!((d.access_key_id.as_str(), d.session_token), ("AKIADEFAULT", None));
        let o = from_file_text(text, "ops", "f").unwrap();
        assert_eq!(
            (o.secret_access_key.as_str(), o.session_token.as_deref()),
            ("s2", Some("t"))
        );
        assert!(from_file_text(text, "missing", "f").is_none());
        assert_eq!(format!("{o:?}"), "Keys(AKIA…, from f)", "never the secret");
    }

    #[tokio::test]
    async fn imdsv2_asks_for_a_session_token_then_the_role() {
        // A stand-in metadata service that insists on the IMDSv2 token.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                let body = if req.starts_with("PUT /latest/api/token") {
                    "TOKEN123".to_string()
                } else if !req.to_ascii_lowercase().contains("x-aws-ec2-metadata-token: token123") {
                    String::new()
                } else if req.starts_with("GET /latest/meta-data/iam/security-credentials/ ") {
                    "vantage-role".to_string()
                } else if req.starts_with("GET /latest/meta-data/iam/security-credentials/vantage-role") {
                    r#"{"Code":"Success","AccessKeyId":"ASIAROLE","SecretAccessKey":"sec","Token":"tok","Expiration":"2030-01-01T00:00:00Z"}"#.to_string()
                } else {
                    String::new()
                };
                let status = if body.is_empty() { "401 Unauthorized" } else { "200 OK" };
                let _ = s
                    .write_all(
                        format!(
                            "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .await;
            }
        });
        let s = Sources {
            imds_endpoint: format!("http://{addr}"),
            file: Some("/nonexistent".into()),
            ..Default::default()
        };
        let client = reqwest::Client::new();
        let k = imds(&client, &s).await.unwrap().unwrap();
        assert_eq!(k.access_key_id, "ASIAROLE");
        assert_eq!(k.session_token.as_deref(), Some("tok"));
        assert_eq!(k.source, "instance role vantage-role");
        assert!(k.expires.is_some());
    }
}
