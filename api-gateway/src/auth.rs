//! Bearer tokens with roles (SPEC §3). Tokens are configured as SHA-256 digests, never in clear, in the
//! file named by `auth.tokens_file`, one per line: `<role> <sha256 lowercase hex> [<name>]`, `#` starts a
//! comment. A request's token is hashed and compared with every configured digest in constant time.
//!
//! Each protected resource is wrapped in [`require`] with the least role it needs; the caller it let in
//! is in the request's extensions, and handlers take it as a [`Caller`] argument (the trigger's rate
//! limit is per caller).

use std::collections::HashSet;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{FromRequest, HttpMessage as _, HttpRequest, ResponseError, web};
use sha2::{Digest as _, Sha256};

use crate::error::ApiError;

/// What a token may do; each role may do everything the roles below it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Get, download and list reports, read a store's timeline.
    Reader,
    /// A reader that may also trigger reports.
    Reporter,
    /// A reporter that may also read `/metrics`.
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Reader, Role::Reporter, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Reporter => "reporter",
            Role::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|role| role.as_str() == text)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A SHA-256 digest of a token.
pub type TokenDigest = [u8; 32];

/// The authenticated caller of a request: its role, the name its tokens-file line gives (empty when
/// none) and its token's digest (what identifies a client: rate limits, idempotency keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub role: Role,
    pub name: String,
    pub digest: TokenDigest,
}

impl Caller {
    /// The caller of every request when `auth.disabled` is set: one anonymous admin.
    pub fn anonymous() -> Caller {
        Caller { role: Role::Admin, name: "anonymous".into(), digest: [0; 32] }
    }
}

/// Handlers of protected routes take the caller [`require`] let in.
impl FromRequest for Caller {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Caller, ApiError>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(
            request.extensions().get::<Caller>().cloned().ok_or_else(|| {
                ApiError::internal(anyhow::anyhow!("{} is served without authentication", request.path()))
            }),
        )
    }
}

/// The SHA-256 of `token`.
pub fn digest(token: &str) -> TokenDigest {
    Sha256::digest(token.as_bytes()).into()
}

pub fn to_hex(digest: &TokenDigest) -> String {
    digest.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn from_hex(text: &str) -> Option<TokenDigest> {
    if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return None;
    }
    let mut digest = [0u8; 32];
    for (i, byte) in digest.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(digest)
}

/// Equal digests, in a time that does not depend on where they differ.
fn same_digest(a: &TokenDigest, b: &TokenDigest) -> bool {
    std::hint::black_box(a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y))) == 0
}

#[derive(Debug, Clone)]
struct Entry {
    role: Role,
    name: String,
    digest: TokenDigest,
}

/// Who may call the API: the tokens of the tokens file, or anybody (`auth.disabled`).
#[derive(Debug, Clone)]
pub struct Authenticator {
    entries: Option<Arc<Vec<Entry>>>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokensFileError {
    #[error("cannot read the tokens file {path}: {reason}")]
    Unreadable { path: String, reason: String },
    #[error("tokens file {path}, line {line}: {problem} (expected `<role> <sha256 lowercase hex> [<name>]`)")]
    BadLine { path: String, line: usize, problem: String },
    #[error("the tokens file {0} names no token: add a line (api-gateway token new --role reader)")]
    Empty(String),
}

impl Authenticator {
    /// Lets everybody in, as an admin (`auth.disabled`).
    pub fn disabled() -> Authenticator {
        Authenticator { entries: None }
    }

    pub fn is_disabled(&self) -> bool {
        self.entries.is_none()
    }

    /// How many tokens are configured (0 when disabled).
    pub fn token_count(&self) -> usize {
        self.entries.as_ref().map_or(0, |entries| entries.len())
    }

    pub fn from_file(path: &Path) -> Result<Authenticator, TokensFileError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| TokensFileError::Unreadable { path: shown.clone(), reason: e.to_string() })?;
        Self::parse(&text, &shown)
    }

    /// Reads the lines of a tokens file; `path` only names it in errors.
    pub fn parse(text: &str, path: &str) -> Result<Authenticator, TokensFileError> {
        let mut entries = Vec::new();
        let mut seen = HashSet::new();
        for (index, line) in text.lines().enumerate() {
            let bad = |problem: String| TokensFileError::BadLine { path: path.to_owned(), line: index + 1, problem };
            let content = line.split('#').next().unwrap_or("").trim();
            if content.is_empty() {
                continue;
            }
            let mut fields = content.splitn(3, char::is_whitespace);
            let role_text = fields.next().unwrap_or("");
            let role = Role::parse(role_text)
                .ok_or_else(|| bad(format!("unknown role {role_text:?}; roles are reader, reporter and admin")))?;
            let hex = fields.next().map(str::trim).unwrap_or("");
            if hex.is_empty() {
                return Err(bad("the SHA-256 digest is missing".into()));
            }
            let digest = from_hex(hex)
                .ok_or_else(|| bad("the digest is not 64 lowercase hexadecimal characters (a SHA-256)".into()))?;
            if !seen.insert(digest) {
                return Err(bad("this digest is already on an earlier line".into()));
            }
            let name = fields.next().map(str::trim).unwrap_or("").to_owned();
            entries.push(Entry { role, name, digest });
        }
        if entries.is_empty() {
            return Err(TokensFileError::Empty(path.to_owned()));
        }
        Ok(Authenticator { entries: Some(Arc::new(entries)) })
    }

    /// The caller a request's `Authorization` header names, or why it is refused (401).
    fn authenticate(&self, request: &HttpRequest) -> Result<Caller, ApiError> {
        let Some(entries) = &self.entries else { return Ok(Caller::anonymous()) };
        let token = bearer_token(request)?;
        let presented = digest(token);
        // Every entry is compared, so the time taken does not say which one matched.
        let mut found = None;
        for entry in entries.iter() {
            if same_digest(&entry.digest, &presented) {
                found = Some(entry);
            }
        }
        let entry = found.ok_or_else(|| ApiError::Unauthorized("the bearer token is not valid".into()))?;
        Ok(Caller { role: entry.role, name: entry.name.clone(), digest: entry.digest })
    }
}

fn bearer_token(request: &HttpRequest) -> Result<&str, ApiError> {
    let missing =
        || ApiError::Unauthorized("this route needs a token: send the header Authorization: Bearer <token>".into());
    let value = request.headers().get(header::AUTHORIZATION).ok_or_else(missing)?;
    let value = value.to_str().map_err(|_| missing())?.trim();
    let (scheme, token) = value.split_once(' ').ok_or_else(missing)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(missing());
    }
    Ok(token)
}

/// What [`require`]'s middleware answers: the route's own response, or the refusal.
pub type Checked<B> = std::pin::Pin<Box<dyn Future<Output = Result<ServiceResponse<EitherBody<B>>, actix_web::Error>>>>;

/// Middleware of a resource that needs `role`: 401 without a valid token, 403 with one of a lower role;
/// otherwise the [`Caller`] goes into the request's extensions.
pub fn require<B: MessageBody + 'static>(role: Role) -> impl Fn(ServiceRequest, Next<B>) -> Checked<B> + Clone {
    move |request: ServiceRequest, next: Next<B>| {
        Box::pin(async move {
            let checked = match request.app_data::<web::Data<Authenticator>>() {
                Some(authenticator) => authenticator.authenticate(request.request()),
                None => Err(ApiError::internal(anyhow::anyhow!("the gateway has no authenticator"))),
            };
            let refused = match checked {
                Ok(caller) if caller.role >= role => {
                    request.extensions_mut().insert(caller);
                    return next.call(request).await.map(ServiceResponse::map_into_left_body);
                }
                Ok(caller) => ApiError::Forbidden(format!(
                    "this route needs the {role} role; the token{} has the {} role",
                    if caller.name.is_empty() { String::new() } else { format!(" {:?}", caller.name) },
                    caller.role
                )),
                Err(error) => error,
            };
            Ok(request.into_response(refused.error_response()).map_into_right_body())
        })
    }
}

/// A new random token (32 bytes of the operating system's CSPRNG, URL-safe base64 without padding: 43
/// characters) and the tokens-file line that grants it `role`.
pub fn new_token(role: Role, name: Option<&str>) -> Result<(String, String), TokenError> {
    if let Some(name) = name
        && (name.trim().is_empty() || name.contains('#') || name.contains('\n') || name.trim() != name)
    {
        return Err(TokenError::BadName(name.to_owned()));
    }
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).map_err(|e| TokenError::Random(e.to_string()))?;
    let token = base64_url(&bytes);
    let mut line = format!("{role} {}", to_hex(&digest(&token)));
    if let Some(name) = name {
        line.push(' ');
        line.push_str(name);
    }
    Ok((token, line))
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the operating system gave no random bytes: {0}")]
    Random(String),
    #[error("a token's name must be non-empty text without '#', line breaks or surrounding spaces (got {0:?})")]
    BadName(String),
}

fn base64_url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for group in bytes.chunks(3) {
        let n = group.iter().enumerate().fold(0u32, |n, (i, &b)| n | (u32::from(b) << (16 - 8 * i)));
        for i in 0..=group.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn a_tokens_file_gives_roles_names_and_digests() {
        let text = format!("# operators\nadmin {HEX} ops team\n\nreader {} # dashboards\n", "a".repeat(64));
        let auth = Authenticator::parse(&text, "tokens").expect("parses");
        assert_eq!(auth.token_count(), 2);
        let entries = auth.entries.expect("enabled");
        assert_eq!((entries[0].role, entries[0].name.as_str()), (Role::Admin, "ops team"));
        assert_eq!(entries[0].digest, digest("test"));
        assert_eq!((entries[1].role, entries[1].name.as_str()), (Role::Reader, ""));
    }

    #[test]
    fn a_bad_line_is_named() {
        let cases = [
            (format!("boss {HEX}"), "unknown role"),
            ("reader".to_owned(), "digest is missing"),
            (format!("reader {}", HEX.to_uppercase()), "64 lowercase"),
            ("reader abc".to_owned(), "64 lowercase"),
            (format!("reader {HEX}\nadmin {HEX}"), "already"),
        ];
        for (text, problem) in cases {
            let error = Authenticator::parse(&format!("# head\n{text}"), "t.txt").expect_err(&text);
            let line = if problem == "already" { 3 } else { 2 };
            assert!(
                matches!(&error, TokensFileError::BadLine { line: l, problem: p, .. } if *l == line && p.contains(problem)),
                "{text}: {error}"
            );
            assert!(error.to_string().starts_with(&format!("tokens file t.txt, line {line}:")), "{error}");
        }
        assert_eq!(Authenticator::parse("# nothing\n", "t").expect_err("empty"), TokensFileError::Empty("t".into()));
    }

    #[test]
    fn a_new_token_is_random_url_safe_and_its_line_parses() {
        let (token, line) = new_token(Role::Reporter, Some("ci")).expect("token");
        assert_eq!(token.len(), 43);
        assert!(token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{token}");
        assert_eq!(line, format!("reporter {} ci", to_hex(&digest(&token))));
        let auth = Authenticator::parse(&line, "t").expect("the line parses");
        assert_eq!(auth.entries.expect("enabled")[0].digest, digest(&token));
        assert_ne!(new_token(Role::Reader, None).expect("token").0, token);
        assert!(new_token(Role::Reader, Some("a#b")).is_err());
    }

    #[test]
    fn base64_url_matches_the_standard() {
        assert_eq!(base64_url(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64_url(b"fooba"), "Zm9vYmE");
        assert_eq!(base64_url(b"f"), "Zg");
        assert_eq!(base64_url(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn roles_are_ordered() {
        assert!(Role::Reader < Role::Reporter && Role::Reporter < Role::Admin);
    }
}
