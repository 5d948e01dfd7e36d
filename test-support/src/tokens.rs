//! A tokens file for a gateway under test: one token per role, written as the gateway reads it
//! (`<role> <sha256 lowercase hex> <name>`), removed with its folder.

use std::path::PathBuf;

use sha2::{Digest as _, Sha256};

use crate::TempDir;

pub struct TestTokens {
    pub reader: String,
    pub reporter: String,
    pub admin: String,
    /// The file to give the gateway as `auth.tokens_file`.
    pub file: PathBuf,
    _dir: TempDir,
}

impl TestTokens {
    /// Three fresh random tokens (`reader`, `reporter`, `admin`, named after their role) in a new file.
    pub fn new() -> TestTokens {
        let dir = TempDir::new();
        let [reader, reporter, admin] = ["reader", "reporter", "admin"].map(|_| nanoid::nanoid!(43));
        let text = format!(
            "# written by test_support::TestTokens\n{}\n{}\n{}\n",
            tokens_line("reader", &reader, "reader"),
            tokens_line("reporter", &reporter, "reporter"),
            tokens_line("admin", &admin, "admin"),
        );
        let file = dir.write("tokens", &text);
        TestTokens { reader, reporter, admin, file, _dir: dir }
    }

    /// The token of `role` ("reader", "reporter" or "admin").
    pub fn of(&self, role: &str) -> &str {
        match role {
            "reader" => &self.reader,
            "reporter" => &self.reporter,
            "admin" => &self.admin,
            other => panic!("no test token of role {other:?}"),
        }
    }
}

impl Default for TestTokens {
    fn default() -> Self {
        TestTokens::new()
    }
}

/// The tokens-file line that grants `token` the `role`.
pub fn tokens_line(role: &str, token: &str, name: &str) -> String {
    let hex: String = Sha256::digest(token.as_bytes()).iter().map(|byte| format!("{byte:02x}")).collect();
    format!("{role} {hex} {name}")
}
